"""Small helpers shared by the tools."""
import os
import sys

SHAPES_WORLD_ROOT = 'data/shapes_world/'


def allow_project_imports() -> None:
    """Let ``custom_imports`` name ``projects.<task>`` when a tool runs from the repository
    root: Python puts the script's folder on ``sys.path``, not the working directory."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def adapt_to_cpu(cfg, launcher: str) -> None:
    """Make a GPU-minded config run on a machine without CUDA.

    - Distributed runs use gloo; the process group is started here because MMEngine's
      ``init_dist`` calls ``torch.cuda.set_device`` unconditionally.
    - DDP gets no ``device_ids`` (MMEngine passes the local rank, which CPU modules reject).
    - ``AmpOptimWrapper`` (which refuses CPUs) becomes bf16 autocast.
    """
    import torch
    if torch.cuda.is_available():
        return
    cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper':
        cfg.optim_wrapper.type = 'BF16AutocastOptimWrapper'
    if launcher != 'none' and cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters',
                                                                    False))
    if launcher == 'pytorch' and not torch.distributed.is_initialized():
        torch.distributed.init_process_group('gloo')


def reroot(x, root: str, old: str = SHAPES_WORLD_ROOT):
    """``x`` (a config dict, list or string) with every path under ``old`` moved under
    ``root``: the benchmarks run a recipe on a copy of its data set elsewhere."""
    if isinstance(x, dict):
        return {k: reroot(v, root, old) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(reroot(v, root, old) for v in x)
    if isinstance(x, str) and x.startswith(old):
        return os.path.join(root, x[len(old):])
    return x


def set_link_lr_mult(cfg, mult: float) -> None:
    """Run the link (the LLM and the query tables) at ``mult`` times the base learning rate,
    keeping the config's other ``paramwise_cfg`` keys: the benchmarks' ``--link-lr-mult``."""
    paramwise = dict(cfg.optim_wrapper.get('paramwise_cfg') or {})
    paramwise['custom_keys'] = {**paramwise.get('custom_keys', {}),
                                **{k: dict(lr_mult=mult) for k in ('llm.', 'super_link.queries')}}
    paramwise['bypass_duplicate'] = True  # the tied input and output embeddings
    cfg.optim_wrapper.paramwise_cfg = paramwise
