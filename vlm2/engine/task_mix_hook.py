"""A curriculum over task families: how often each family's batches come, by training phase.

The paper trains its decoders in stages (joint, then decoders alone); within one short run on
a CPU a decoder that must first find how to read the link (the [GEN] condition's sudden drop
in alignment loss, plugin README) can be given the early steps alone, and the others join
later. ``TaskBatchSampler`` draws each step's family with its ``probs``; this hook rewrites
them when a phase starts.
"""
from typing import Optional, Sequence

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import print_log

from vlm2.datasets import TaskBatchSampler
from vlm2.registry import HOOKS

from .budget_hook import BudgetHook


@HOOKS.register_module()
class TaskMixHook(Hook):
    """Sets the task families' sampling weights by phase.

    Args:
        phases: ``dict(start=fraction, weights={family: weight})`` in order of ``start``, the
            first at 0. The fraction is of a ``BudgetHook``'s budget when the runner has one
            (minutes or iterations), else of ``train_cfg.max_iters``. Families a phase leaves
            out get weight 0. A new phase applies from the next batch the loader draws
            (batches its workers already prefetched, two per worker by default, keep the mix
            they were drawn with, the first phase included).

    Counts the steps of each family in ``steps``, for reports.
    """
    priority = 'HIGH'  # after BudgetHook (VERY_HIGH) has started its clock

    def __init__(self, phases: Sequence[dict]) -> None:
        if not phases or phases[0].get('start') != 0:
            raise ValueError(f'TaskMixHook.phases must start with a phase at start=0, got '
                             f'{list(phases)}')
        starts = [p['start'] for p in phases]
        if starts != sorted(starts) or starts[-1] >= 1:
            raise ValueError(f'TaskMixHook.phases starts must rise and stay below 1, got {starts}')
        for p in phases:
            if not p.get('weights') or min(p['weights'].values()) < 0 \
                    or sum(p['weights'].values()) <= 0:
                raise ValueError(f'TaskMixHook phase at start={p["start"]}: weights must be '
                                 f'non-negative with a positive sum, got {p.get("weights")}')
        self.phases = list(phases)
        self.current: Optional[int] = None
        self.steps: dict[str, int] = {}

    def before_train(self, runner) -> None:
        sampler = runner.train_dataloader.batch_sampler
        if not isinstance(sampler, TaskBatchSampler):
            raise TypeError('TaskMixHook needs train_dataloader.batch_sampler to be a '
                            f'TaskBatchSampler, got {type(sampler).__name__}')
        for p in self.phases:
            unknown = set(p['weights']) - set(sampler.families)
            if unknown:
                raise ValueError(f'TaskMixHook phase at start={p["start"]}: no family '
                                 f'{sorted(unknown)} in the training data ({sampler.families})')
        self.sampler = sampler
        self.budget = next((h for h in runner.hooks if isinstance(h, BudgetHook)), None)
        self._apply(runner, 0.0)

    def _spent(self, runner) -> float:
        if self.budget is not None and self.budget.start is not None:
            return self.budget.spent(runner)
        return runner.iter / max(runner.max_iters, 1)

    def _apply(self, runner, spent: float) -> None:
        phase = max(i for i, p in enumerate(self.phases) if p['start'] <= spent)
        if phase == self.current:
            return
        self.current = phase
        weights = self.phases[phase]['weights']
        w = np.array([float(weights.get(f, 0.0)) for f in self.sampler.families])
        self.sampler.probs = w / w.sum()
        mix = dict(zip(self.sampler.families, self.sampler.probs.round(3).tolist()))
        print_log(f'TaskMixHook: phase {phase} at iteration {runner.iter} ({spent:.0%} of the '
                  f'budget): {mix}', logger='current')

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._apply(runner, self._spent(runner))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        samples = (data_batch or {}).get('data_samples') or []
        if samples:
            task = samples[0].task
            self.steps[task] = self.steps.get(task, 0) + 1
