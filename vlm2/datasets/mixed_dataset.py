"""Several sources mixed with configured ratios."""
from typing import Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from vlm2.registry import DATASETS


@DATASETS.register_module()
class MixedDataset(Dataset):
    """Mixes sub-datasets so that each makes up its ``ratio`` of every epoch.

    Without ratios every sample appears once, in order (evaluation). With ratios, an epoch of
    ``length`` samples (default: the sum of the sub-datasets) draws each source's share by
    cycling through a seeded permutation of that source, so a source smaller than its share
    repeats and a larger one is subsampled evenly.

    Args:
        datasets: sub-dataset configs or objects.
        ratios: relative weights, one per dataset (normalised).
        length: samples per epoch.
        seed: the seed of the draw (the same on every rank).
    """

    def __init__(self, datasets: Sequence, ratios: Optional[Sequence[float]] = None,
                 length: Optional[int] = None, seed: int = 0) -> None:
        self.datasets = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        sizes = [len(d) for d in self.datasets]
        for i, n in enumerate(sizes):
            if n == 0:
                raise ValueError(f'MixedDataset.datasets[{i}] '
                                 f'({getattr(self.datasets[i], "ann_file", "")}) is empty')
        if ratios is None:
            self.index = [(d, i) for d, n in enumerate(sizes) for i in range(n)]
            return
        if len(ratios) != len(self.datasets) or min(ratios) < 0 or sum(ratios) <= 0:
            raise ValueError(f'MixedDataset.ratios must be {len(self.datasets)} non-negative '
                             f'weights, got {list(ratios)}')
        rng = np.random.default_rng(seed)
        total = length or sum(sizes)
        share = np.floor(np.asarray(ratios, float) / sum(ratios) * total).astype(int)
        share[int(np.argmax(ratios))] += total - share.sum()
        self.index = []
        for d, (n, k) in enumerate(zip(sizes, share)):
            perm = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k]
            self.index += [(d, int(i)) for i in perm]
        order = rng.permutation(len(self.index))
        self.index = [self.index[i] for i in order]

    @property
    def metainfo(self) -> dict:
        return dict(datasets=[getattr(d, 'metainfo', {}) for d in self.datasets])

    def __len__(self) -> int:
        return len(self.index)

    def get_task(self, idx: int) -> str:
        d, i = self.index[idx]
        return self.datasets[d].get_task(i)

    def __getitem__(self, idx: int):
        d, i = self.index[idx]
        return self.datasets[d][i]
