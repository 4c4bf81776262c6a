"""bf16 autocast around the forward pass, on any device."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from vlm2.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """Runs the training forward under ``torch.autocast(dtype=bfloat16)``; no loss scaling.

    Written because MMEngine's ``AmpOptimWrapper`` refuses to run on a CPU, where bf16
    autocast trains the tiny model about twice as fast (0.41 s → 0.23 s a step measured on 2
    cores); bf16 needs no grad scaler, so the wrapper is only the autocast context.
    """

    def __init__(self, *args, dtype: str = 'bfloat16', **kwargs) -> None:
        # ``dtype`` and ``loss_scale`` are accepted so a GPU config's AmpOptimWrapper settings
        # carry over (tools/train.py switches to this wrapper on a CPU).
        if str(dtype).replace('torch.', '') != 'bfloat16':
            raise ValueError(f'optim_wrapper.dtype: {type(self).__name__} autocasts to '
                             f'bfloat16 only, got {dtype!r}')
        kwargs.pop('loss_scale', None)
        super().__init__(*args, **kwargs)

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device, dtype=torch.bfloat16):
            yield
