"""Metrics of the perception decoder: COCO AP (mmdet's CocoMetric), REC P@0.5, RES cIoU/gIoU,
interactive segmentation mIoU/cIoU per prompt kind, CrowdHuman AP50/mMR/recall (mmdet's
CrowdHumanMetric)."""
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmdet.evaluation.metrics import CocoMetric, CrowdHumanMetric
from mmdet.structures.bbox import bbox_overlaps
from mmengine.logging import print_log
from pycocotools import mask as mask_utils

from vlm2.evaluation import TaskMetric
from vlm2.registry import METRICS


def _class_labels(sample: dict, classes: Sequence[str]) -> tuple[np.ndarray, int]:
    """Dataset label of each prediction, from its phrase (open vocabulary: the phrase the
    model wrote, else the prompt's slot). Returns labels (-1: unknown phrase) and that count."""
    pred = sample.get('pred_instances') or {}
    if not len(pred.get('scores', [])):
        return np.zeros(0, dtype=np.int64), 0
    index = {c: i for i, c in enumerate(classes)}
    slots = sample.get('phrase_names') or []
    names = pred.get('label_names') or [slots[i] if i < len(slots) else ''
                                        for i in pred['labels'].tolist()]
    labels = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    return labels, int((labels < 0).sum())


@METRICS.register_module()
class PhraseCocoMetric(TaskMetric):
    """COCO box / mask AP through mmdet's ``CocoMetric``; predictions are mapped from phrases
    to the file's categories by name (a phrase naming no category is counted and dropped).

    Args:
        ann_file: the COCO instances file of the evaluated split.
        metric: ``'bbox'``, ``'segm'`` or both.
        tasks: the task families scored.
    """

    default_prefix = 'coco'

    def __init__(self, ann_file: str, tasks: Union[str, Sequence[str]] = ('det', 'seg'),
                 metric: Union[str, Sequence[str]] = ('bbox', 'segm'),
                 prefix: Optional[str] = None, **kwargs) -> None:
        super().__init__(tasks=tasks, prefix=prefix)
        self.coco = CocoMetric(ann_file=ann_file, metric=[metric] if isinstance(metric, str)
                               else list(metric), **kwargs)
        cats = sorted(self.coco._coco_api.load_cats(self.coco._coco_api.get_cat_ids()),
                      key=lambda c: c['id'])
        self.classes = tuple(c['name'] for c in cats)
        self.coco.dataset_meta = dict(classes=self.classes)
        self.unknown = 0

    def process_sample(self, sample: dict) -> dict:
        det = sample['det_sample']
        labels, unknown = _class_labels(sample, self.classes)
        self.unknown += unknown
        keep = torch.from_numpy(labels >= 0)
        pred = sample.get('pred_instances') or {}
        h, w = det['ori_shape'][:2]
        if not len(keep):  # the model routed nothing to the decoder: no predictions
            pred = dict(bboxes=torch.zeros(0, 4), scores=torch.zeros(0),
                        masks=torch.zeros(0, h, w, dtype=torch.bool))
        out = dict(bboxes=pred['bboxes'][keep], scores=pred['scores'][keep],
                   labels=torch.from_numpy(labels)[keep])
        if 'masks' in pred and 'segm' in self.coco.metrics:
            out['masks'] = pred['masks'][keep].cpu()
        self.coco.results = []
        self.coco.process({}, [dict(img_id=det['img_id'], ori_shape=det['ori_shape'],
                                    pred_instances=out)])
        return self.coco.results.pop()

    def compute_metrics(self, results: list) -> dict:
        if self.unknown:
            print_log(f'PhraseCocoMetric: {self.unknown} predictions named no category of '
                      f'{self.coco._coco_api.dataset.get("info", {}).get("description", "")}'
                      ' the file and were dropped', 'current')
        self.unknown = 0
        return self.coco.compute_metrics(results)


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes (mmdet's ``bbox_overlaps``)."""
    return float(bbox_overlaps(torch.as_tensor(a, dtype=torch.float32)[None],
                               torch.as_tensor(b, dtype=torch.float32)[None])[0, 0])


@METRICS.register_module()
class RECMetric(TaskMetric):
    """Referring expression comprehension: precision at IoU 0.5 of the top-1 box against
    ``gt_bbox`` (a sample with no prediction counts as a miss)."""

    default_prefix = 'rec'

    def __init__(self, tasks: Union[str, Sequence[str]] = 'rec', iou_thr: float = 0.5,
                 prefix: Optional[str] = None, **kwargs) -> None:
        super().__init__(tasks=tasks, prefix=prefix, **kwargs)
        self.iou_thr = iou_thr

    def process_sample(self, sample: dict) -> dict:
        pred = sample.get('pred_instances')
        if pred is None or len(pred['scores']) == 0:
            return dict(iou=0.0)
        top = int(pred['scores'].argmax())
        return dict(iou=box_iou(pred['bboxes'][top].cpu(), sample['gt_bbox']))

    def compute_metrics(self, results: list) -> dict:
        ious = np.array([r['iou'] for r in results])
        return {'precision@0.5': float((ious >= self.iou_thr).mean()) if len(ious) else 0.0,
                'mean_iou': float(ious.mean()) if len(ious) else 0.0}


def decode_segm(segm, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons or RLE) as a (H, W) uint8 mask."""
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm['counts'], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle)


def _iou_summary(results: list) -> dict:
    """cIoU (total intersection / total union) and the mean of per-sample IoUs."""
    inter = np.array([r['inter'] for r in results], float)
    union = np.array([r['union'] for r in results], float)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return dict(cIoU=float(inter.sum() / max(union.sum(), 1)),
                mIoU=float(ious.mean()) if len(ious) else 0.0)


@METRICS.register_module()
class RESMetric(TaskMetric):
    """Referring expression segmentation: cIoU (total intersection / total union over the
    set) and gIoU (mean of per-sample IoUs) of the top-1 mask against ``gt_segm``."""

    default_prefix = 'res'

    def __init__(self, tasks: Union[str, Sequence[str]] = 'res',
                 prefix: Optional[str] = None, **kwargs) -> None:
        super().__init__(tasks=tasks, prefix=prefix, **kwargs)

    def process_sample(self, sample: dict) -> dict:
        h, w = sample['det_sample']['ori_shape'][:2]
        gt = decode_segm(sample['gt_segm'], h, w).astype(bool)
        pred = sample.get('pred_instances')
        if pred is None or len(pred['scores']) == 0 or 'masks' not in pred:
            mask = np.zeros_like(gt)
        else:
            mask = pred['masks'][int(pred['scores'].argmax())].cpu().numpy().astype(bool)
        inter, union = int((mask & gt).sum()), int((mask | gt).sum())
        return dict(inter=inter, union=union)

    def compute_metrics(self, results: list) -> dict:
        iou = _iou_summary(results)
        return dict(cIoU=iou['cIoU'], gIoU=iou['mIoU'])


@METRICS.register_module()
class InteractiveSegMetric(RESMetric):
    """Interactive segmentation: mIoU (mean of per-sample IoUs) and cIoU of the top-1 mask,
    overall and per visual-prompt kind (``prompt_kinds`` of the sample)."""

    default_prefix = 'interactive'

    def __init__(self, tasks: Union[str, Sequence[str]] = 'interactive',
                 prefix: Optional[str] = None, **kwargs) -> None:
        super().__init__(tasks=tasks, prefix=prefix, **kwargs)

    def process_sample(self, sample: dict) -> dict:
        return dict(super().process_sample(sample),
                    kind=(sample.get('prompt_kinds') or ['all'])[0])

    def compute_metrics(self, results: list) -> dict:
        out = _iou_summary(results)
        for kind in sorted({r['kind'] for r in results}):
            for name, v in _iou_summary([r for r in results if r['kind'] == kind]).items():
                out[f'{kind}/{name}'] = v
        return out


class _CrowdHumanRecall(CrowdHumanMetric):
    """mmdet's CrowdHumanMetric, also keeping the recall at all detections (its AP pass
    computes it and throws it away)."""

    def eval_ap(self, score_list, gt_num, img_num):
        self.recall = sum(1 for item in score_list if item[1] == 1) / max(gt_num, 1)
        return CrowdHumanMetric.eval_ap(score_list, gt_num, img_num)


@METRICS.register_module()
class PhraseCrowdHumanMetric(TaskMetric):
    """CrowdHuman AP50, mMR and recall through mmdet's ``CrowdHumanMetric`` (``ann_file`` is
    the ``.odgt`` file); every prediction of the ``person`` prompt counts."""

    default_prefix = 'crowd_human'

    def __init__(self, ann_file: str, tasks: Union[str, Sequence[str]] = 'crowd',
                 metric: Sequence[str] = ('AP', 'MR', 'JI'), prefix: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(tasks=tasks, prefix=prefix)
        self.crowd = _CrowdHumanRecall(ann_file=ann_file, metric=list(metric), **kwargs)

    def process_sample(self, sample: dict) -> dict:
        det = sample['det_sample']
        pred = sample.get('pred_instances') or dict(bboxes=torch.zeros(0, 4),
                                                    scores=torch.zeros(0))
        self.crowd.results = []
        self.crowd.process({}, [dict(img_id=det['img_id'], ori_shape=det['ori_shape'],
                                     pred_instances=pred)])
        return self.crowd.results.pop()

    def compute_metrics(self, results: list) -> dict:
        out = self.crowd.compute_metrics(results)
        if 'AP' in self.crowd.metrics:
            out['recall'] = round(float(self.crowd.recall), 4)
        return out
