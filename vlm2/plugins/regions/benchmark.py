"""Visual-prompt benchmark: the tiny recipe with the region encoder and the perception decoder
(``configs/visionllmv2_tiny_shapes_regions_seg.py``) trained on ShapesWorld for a wall-clock
budget, then scored on held-out regions:

- interactive segmentation ("Please segment region1." → ``region1[SEG]``): mIoU and cIoU per
  prompt kind (point, scribble, box, mask);
- region recognition ("What is in region1?"): accuracy per prompt kind (point, box, mask).

The recipe's vision tower starts from dense pretraining on ShapesWorld instances
(``configs/visionllmv2/visionllmv2_tiny_tower_pretrain.py``), a stage of its own as the
paper's pretrained CLIP is: when its checkpoint is missing, the benchmark first trains it with
``tools/train.py`` on ``--data-root`` and reports that time apart (``tower_pretrain_s``).
Replies are generated (``routing='generate'``): the model itself has to write
``region1[SEG]`` for a mask to be drawn. The learning rate follows the recipe's shape (3%
warm-up, cosine to 1%) over the budget. Writes ``WORK_DIR/benchmark.json`` (metrics, learning
curve) and prints the metrics. Run one heavy job at a time on a shared machine::

    flock /tmp/vlm2_cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python \\
        vlm2/plugins/regions/benchmark.py --data-root /tmp/sw --budget-min 20
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from vlm2.engine import BudgetHook
from vlm2.utils import reroot

CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), 'configs',
                  'visionllmv2_tiny_shapes_regions_seg.py')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TOWER_CONFIG = osp.join(ROOT, 'configs', 'visionllmv2', 'visionllmv2_tiny_tower_pretrain.py')


def ensure_tower(cfg: Config, data_root: str) -> Optional[float]:
    """Train the tower the recipe starts from (``TOWER_CONFIG``, on ``data_root``) when its
    checkpoint is missing, as ``make demo`` does for its own. Returns the seconds it took, or
    None when there was nothing to do (no pretrained tower named, or it exists)."""
    init = cfg.model.vision_tower.get('init_cfg') or {}
    ckpt = init.get('checkpoint')
    if not ckpt or osp.isfile(ckpt):
        return None
    tower = Config.fromfile(TOWER_CONFIG)
    expected = f'iter_{tower.train_cfg.max_iters}.pth'
    if osp.basename(ckpt) != expected:
        raise ValueError(f'model.vision_tower.init_cfg.checkpoint: {ckpt} is missing and '
                         f'{TOWER_CONFIG} would write {expected}, not it; train it yourself')
    root = osp.abspath(data_root) + '/'
    print(f'{ckpt} is missing: pretraining the tower ({osp.basename(TOWER_CONFIG)}) on {root}',
          flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), TOWER_CONFIG,
                    '--work-dir', osp.dirname(ckpt), '--cfg-options',
                    f'train_dataloader.dataset.data_root={root}',
                    f'val_dataloader.dataset.data_root={root}'], check=True)
    return time.perf_counter() - start


def benchmark_config(args) -> Config:
    cfg = Config(reroot(Config.fromfile(args.config).to_dict(), args.data_root))
    cfg.model.test_cfg.routing = 'generate'
    # the region tasks only: recognition and interactive segmentation, first N per kind
    val = [d for d in cfg.val_dataloader.dataset.datasets
           if d['type'] in ('RegionRecognitionDataset', 'InteractiveSegDataset')]
    for d in val:
        d['indices'] = args.val_per_kind
    cfg.val_dataloader.dataset.datasets = val
    cfg.val_evaluator = [e for e in cfg.val_evaluator if e['type'] != 'VQAMetric']
    cfg.test_dataloader, cfg.test_evaluator = cfg.val_dataloader, cfg.val_evaluator
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.max_iters or 10 ** 7,
                         val_interval=10 ** 8)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10 ** 8)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG,
                        help='the recipe, or a child config of it (e.g. another vision tower)')
    parser.add_argument('--data-root', default='data/shapes_world/')
    parser.add_argument('--work-dir', default='work_dirs/regions_benchmark')
    parser.add_argument('--budget-min', type=float, default=20.0,
                        help='training wall-clock budget (the issue allows <= 20)')
    parser.add_argument('--val-per-kind', type=int, default=150,
                        help='held-out regions scored per prompt kind')
    parser.add_argument('--max-iters', type=int, default=0, help='smoke runs only')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--eval-every', type=float, default=None,
                        help='also evaluate each time this fraction of the budget is spent '
                             '(e.g. 0.25), off the clock: a learning curve of the metrics '
                             'in WORK_DIR/benchmark.json "evals"')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override keys of the recipe, as tools/train.py, e.g. '
                             'train_dataloader.dataset.ratios="[0.1,0.2,0.5,0.2]"')
    args = parser.parse_args()
    if args.budget_min > 20:
        parser.error('--budget-min: the budget is at most 20 minutes')
    os.makedirs(args.work_dir, exist_ok=True)
    cfg = benchmark_config(args)
    tower_s = ensure_tower(cfg, args.data_root)
    runner = Runner.from_cfg(cfg)
    hook = BudgetHook(budget_s=args.budget_min * 60, eval_every=args.eval_every)
    runner.register_hook(hook)
    runner.train()
    runner.save_checkpoint(args.work_dir, 'final.pth')
    start = time.perf_counter()
    metrics = runner.val_loop.run()
    result = dict(benchmark='regions_shapes_world', budget_min=args.budget_min,
                  iters=runner.iter, train_s=round(hook.elapsed, 1),
                  tower_pretrain_s=None if tower_s is None else round(tower_s, 1),
                  tower=(cfg.model.vision_tower.get('init_cfg') or {}).get('checkpoint'),
                  eval_s=round(time.perf_counter() - start, 1),
                  val_per_kind=args.val_per_kind,
                  metrics={k: round(float(v), 4) for k, v in metrics.items()},
                  evals=hook.evals, curve=hook.curve)
    with open(osp.join(args.work_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ('curve', 'evals')}, indent=1))


if __name__ == '__main__':
    main()
