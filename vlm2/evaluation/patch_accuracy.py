"""Accuracy of per-patch attribute predictions (dense tower pretraining)."""
from typing import Sequence

import torch
from mmengine.evaluator import BaseMetric

from vlm2.registry import METRICS


@METRICS.register_module()
class PatchAccuracy(BaseMetric):
    """Per attribute, the accuracy over patches whose target is an instance (label > 0).

    Background dominates the patches of a sparse scene, so the all-patch accuracy of a
    model that sees nothing is high; the foreground accuracy is what tells.
    """

    default_prefix = 'patch'

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:  # the evaluator hands data samples over as dicts
            pred, gt = sample['pred_patch_labels'], sample['gt_patch_labels']
            fg = gt > 0
            self.results.append(dict(names=tuple(sample['attributes']),
                                     correct=((pred == gt) & fg).sum(-1),
                                     total=fg.sum(-1)))

    def compute_metrics(self, results: list) -> dict:
        names = results[0]['names']
        correct = torch.stack([r['correct'] for r in results]).sum(0)
        total = torch.stack([r['total'] for r in results]).sum(0)
        return {f'{n}_fg_acc': c / t if t else float('nan')
                for n, c, t in zip(names, correct.tolist(), total.tolist())}
