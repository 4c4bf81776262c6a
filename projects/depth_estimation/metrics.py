"""The standard monocular depth metrics: AbsRel, RMSE and δ<1.25 (Eigen et al., 2014)."""
from typing import Optional

import numpy as np
from mmengine.logging import print_log

from vlm2.evaluation import TaskMetric
from vlm2.registry import METRICS


def depth_errors(pred: np.ndarray, gt: np.ndarray, min_depth: float = 1e-3,
                 max_depth: float = 10.0) -> Optional[dict]:
    """AbsRel, RMSE and δ<1.25 of one image over its valid pixels (``min < gt < max``),
    with the prediction clipped to the same range (the Eigen/BTS evaluation). None when
    the image has no valid pixel. Written by hand: torchmetrics is not a dependency and
    has no δ metric."""
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in shape')
    valid = (gt > min_depth) & (gt < max_depth)
    if not valid.any():
        return None
    p = np.clip(pred[valid].astype(np.float64), min_depth, max_depth)
    g = gt[valid].astype(np.float64)
    return dict(abs_rel=float(np.mean(np.abs(p - g) / g)),
                rmse=float(np.sqrt(np.mean((p - g) ** 2))),
                delta1=float(np.mean(np.maximum(p / g, g / p) < 1.25)))


@METRICS.register_module()
class DepthMetric(TaskMetric):
    """Per-image AbsRel, RMSE and δ<1.25, averaged over images.

    Reads ``pred_depth`` and ``gt_depth`` (metres, same shape). Samples whose reply routed
    no ``[DEPTH]`` have no prediction: they are counted in ``routed`` (the fraction of
    samples with a depth map) and logged, and the errors average over the others.

    Args:
        min_depth / max_depth: the evaluation range (NYU: 1e-3 to 10 m; KITTI: to 80 m).
    """
    default_prefix = 'depth'

    def __init__(self, tasks='depth', min_depth: float = 1e-3, max_depth: float = 10.0,
                 **kwargs) -> None:
        super().__init__(tasks, **kwargs)
        self.min_depth, self.max_depth = min_depth, max_depth

    def process_sample(self, sample: dict) -> dict:
        pred, gt = sample.get('pred_depth'), sample.get('gt_depth')
        if gt is None:
            raise ValueError(f'{sample.get("sample_id")}: no gt_depth to evaluate against')
        if pred is None:
            return dict(routed=False, errors=None)
        return dict(routed=True, errors=depth_errors(np.asarray(pred), np.asarray(gt),
                                                     self.min_depth, self.max_depth))

    def compute_metrics(self, results: list) -> dict:
        errors = [r['errors'] for r in results if r['errors'] is not None]
        missing = sum(not r['routed'] for r in results)
        empty = sum(r['routed'] and r['errors'] is None for r in results)
        if missing or empty:
            print_log(f'DepthMetric: {missing} of {len(results)} sample(s) routed no [DEPTH], '
                      f'{empty} had no valid ground-truth pixel; both are left out of the '
                      'errors', logger='current')
        out = dict(routed=(len(results) - missing) / max(len(results), 1))
        for key in ('abs_rel', 'rmse', 'delta1'):
            out[key] = float(np.mean([e[key] for e in errors])) if errors else float('nan')
        return out
