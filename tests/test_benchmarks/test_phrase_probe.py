"""benchmarks/phrase_probe.py: the probe's scores on states of known structure."""
import sys

import torch

from conftest import BENCHMARKS

sys.path.insert(0, BENCHMARKS)
from phrase_probe import probe  # noqa: E402


def _states(num: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """States whose class is a clean direction of norm ``scale`` beside large nuisance
    variation in other dimensions (like a kind word's state beside its colour's)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % 5
    signal = scale * torch.eye(5)[labels] + 0.03 * torch.randn(num, 5, generator=g)
    nuisance = 3.0 * torch.randn(num, 27, generator=g)
    return torch.cat([signal, nuisance], 1), [f'class{i}' for i in labels.tolist()]


def test_linear_probe_finds_a_small_class_direction_the_nearest_centroid_misses():
    out = probe(*_states(400, scale=0.3))
    assert out['nearest_centroid_acc'] < 0.5
    assert out['linear_probe_acc'] > 0.95
    big = probe(*_states(400, scale=30.0))
    assert big['nearest_centroid_acc'] > 0.95 and big['linear_probe_acc'] > 0.95


def test_linear_probe_is_at_chance_without_a_class_signal():
    x, names = _states(400, scale=0.0)
    assert probe(x, names)['linear_probe_acc'] < 0.4  # chance 0.2, held out
