"""The pretraining scripts' loop: optimiser steps within a time budget, the learning rate
decaying on a cosine over it (a run stopped by the clock ends at a low rate, which the tiny
VAE's reconstructions needed: plugin README)."""
import math
import time
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm


def train_within_budget(opt: torch.optim.Optimizer, step_loss: Callable[[], torch.Tensor],
                        minutes: float, max_iters: int = 0, desc: str = 'train') -> dict:
    """Run ``step_loss()`` (a batch's loss) and an optimiser step until ``minutes`` of
    training (or ``max_iters`` > 0 iterations) are spent, with each group's ``lr`` decayed
    from its starting value to zero on a cosine of the larger fraction spent. Returns the
    iterations, the training minutes and the mean loss of the last 50 steps."""
    base = [group['lr'] for group in opt.param_groups]
    budget, clock, it, losses = minutes * 60, 0.0, 0, []
    bar = tqdm(desc=desc, unit='it')
    while clock < budget and not (max_iters and it >= max_iters):
        start = time.time()
        progress = min(1.0, max(clock / budget, it / max_iters if max_iters else 0.0))
        for group, lr in zip(opt.param_groups, base):
            group['lr'] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        clock += time.time() - start
        it += 1
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f'{np.mean(losses[-50:]):.4f}')
    bar.close()
    return dict(iterations=it, train_minutes=round(clock / 60, 2),
                final_loss=float(np.mean(losses[-50:])))
