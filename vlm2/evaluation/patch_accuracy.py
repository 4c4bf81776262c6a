"""Accuracy of per-patch attribute predictions (dense tower pretraining)."""
from typing import Sequence

import torch
from mmengine.evaluator import BaseMetric

from vlm2.registry import METRICS


@METRICS.register_module()
class PatchAccuracy(BaseMetric):
    """Per attribute, the accuracy over patches whose target is an instance (label > 0).

    Background dominates the patches of a sparse scene, so the all-patch accuracy of a
    model that sees nothing is high; the foreground accuracy is what tells. Where the samples
    also carry ``pred_token_labels`` (the label word nearest each projected image token,
    :class:`~vlm2.models.TowerPretrainer` with ``mllm``), it reports ``{attribute}_word_fg_acc``
    over them too.
    """

    default_prefix = 'patch'

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:  # the evaluator hands data samples over as dicts
            result = dict(names=tuple(sample['attributes']))
            for level in ('patch', 'token'):
                if f'pred_{level}_labels' in sample:
                    pred, gt = sample[f'pred_{level}_labels'], sample[f'gt_{level}_labels']
                    fg = gt > 0
                    result[level] = (((pred == gt) & fg).sum(-1), fg.sum(-1))
            self.results.append(result)

    def compute_metrics(self, results: list) -> dict:
        names, metrics = results[0]['names'], {}
        for level, suffix in (('patch', 'fg_acc'), ('token', 'word_fg_acc')):
            if level not in results[0]:
                continue
            correct = torch.stack([r[level][0] for r in results]).sum(0)
            total = torch.stack([r[level][1] for r in results]).sum(0)
            metrics.update({f'{n}_{suffix}': c / t if t else float('nan')
                            for n, c, t in zip(names, correct.tolist(), total.tolist())})
        return metrics
