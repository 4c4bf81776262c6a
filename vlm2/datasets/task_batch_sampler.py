"""Batches that each come from one task family, on every rank at once (paper §3.3)."""
from collections import defaultdict
from typing import Iterator

import numpy as np
from torch.utils.data import BatchSampler, Sampler

from vlm2.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class TaskBatchSampler(BatchSampler):
    """Groups the indices of ``sampler`` (this rank's share) into task-homogeneous batches.

    The family of each step is drawn from a generator seeded identically on every rank, with
    probabilities proportional to the families' sizes, so a *global* batch is one family, as
    in the paper. Indices of other families wait in their buckets. Works with MMEngine's
    ``DefaultSampler`` and ``InfiniteSampler``; the dataset must have ``get_task(idx)``.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = True) -> None:
        if not hasattr(sampler.dataset, 'get_task'):
            raise TypeError('TaskBatchSampler needs a dataset with get_task(idx) '
                            f'(a VLMBaseDataset or MixedDataset), got {type(sampler.dataset)}')
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        dataset = sampler.dataset
        tasks = [dataset.get_task(i) for i in range(len(dataset))]
        self.families = sorted(set(tasks))
        counts = np.array([tasks.count(f) for f in self.families], float)
        self.probs = counts / counts.sum()
        self._task_of = tasks
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        seed = getattr(self.sampler, 'seed', 0) or 0
        rng = np.random.default_rng([seed, self._epoch])
        buckets: dict[str, list[int]] = defaultdict(list)
        source = iter(self.sampler)
        exhausted = False
        while True:
            family = self.families[rng.choice(len(self.families), p=self.probs)]
            bucket = buckets[family]
            while len(bucket) < self.batch_size and not exhausted:
                try:
                    idx = next(source)
                except StopIteration:
                    exhausted = True
                    break
                buckets[self._task_of[idx]].append(idx)
            if len(bucket) >= self.batch_size:
                yield bucket[:self.batch_size]
                del bucket[:self.batch_size]
            elif exhausted:
                break
        if not self.drop_last:
            for family in self.families:
                if buckets[family]:
                    yield buckets[family]

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
