"""Training loss of the pose decoder: Hungarian matching and the set losses.

mmpose 1.3.2's ``EDPoseHead.loss`` is not implemented, so this glue is ours. The parts are the
libraries': mmdet's ``HungarianAssigner`` with its ``FocalLossCost``, ``BBoxL1Cost`` and
``IoUCost``, plus the two keypoint costs below registered in mmdet's ``TASK_UTILS``; mmdet's
``FocalLoss``, ``L1Loss`` and ``GIoULoss``; mmpose's ``OKSLoss``. Weights follow the paper:
class 2, box L1 5, GIoU 2, keypoint L1 10, OKS 4 (a keypoint-visibility BCE, weight 1, is
added: it gives the per-keypoint scores; the paper lists no weight for it).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss, GIoULoss
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from mmpose.models.losses import OKSLoss
from torch import Tensor, nn


@TASK_UTILS.register_module()
class KeypointL1Cost(BaseMatchCost):
    """Mean L1 distance of the labelled keypoints, in image-normalised coordinates.

    Reads ``keypoints`` (Q, K, 2) of the predictions, ``keypoints`` (G, K, 2) and
    ``keypoint_weights`` (G, K) of the ground truth, and ``img_shape`` (h, w).
    """

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        h, w = img_meta['img_shape']
        scale = pred_instances.keypoints.new_tensor([w, h])
        diff = (pred_instances.keypoints[:, None] - gt_instances.keypoints[None]) / scale
        weight = gt_instances.keypoint_weights[None]
        cost = (diff.abs().sum(-1) * weight).sum(-1) / weight.sum(-1).clamp(min=1)
        return cost * self.weight


@TASK_UTILS.register_module()
class KeypointOKSCost(BaseMatchCost):
    """``-OKS`` between predictions and ground truth (pixels), with per-instance ``areas`` and
    per-keypoint ``sigmas`` of the ground truth."""

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        d2 = (pred_instances.keypoints[:, None] - gt_instances.keypoints[None]).pow(2).sum(-1)
        var = (2 * gt_instances.sigmas).pow(2) * gt_instances.areas[:, None].clamp(min=1)
        oks = torch.exp(-d2 / (2 * var[None]))
        weight = gt_instances.keypoint_weights[None]
        return -(oks * weight).sum(-1) / weight.sum(-1).clamp(min=1) * self.weight


class PoseCriterion(nn.Module):
    """Matches each stage's predictions to the targets and sums the weighted losses.

    Args:
        weights: ``cls``, ``bbox``, ``giou``, ``kpt``, ``oks`` and ``vis`` loss weights; the
            matcher uses the same weights.
        aux_weight: the weight of the earlier stages (encoder proposals, box layers), which
            are supervised on classes and boxes only.
    """

    def __init__(self, weights: Optional[dict] = None, aux_weight: float = 1.0) -> None:
        super().__init__()
        self.w = dict(cls=2.0, bbox=5.0, giou=2.0, kpt=10.0, oks=4.0, vis=1.0, **(weights or {}))
        self.aux_weight = aux_weight
        box_costs = [dict(type='FocalLossCost', weight=self.w['cls']),
                     dict(type='BBoxL1Cost', weight=self.w['bbox'], box_format='xywh'),
                     dict(type='IoUCost', iou_mode='giou', weight=self.w['giou'])]
        kpt_costs = [dict(type='KeypointL1Cost', weight=self.w['kpt']),
                     dict(type='KeypointOKSCost', weight=self.w['oks'])]
        with DefaultScope.overwrite_default_scope('mmdet'):  # the costs live in mmdet's registry
            self.box_assigner = TASK_UTILS.build(dict(type='HungarianAssigner',
                                                      match_costs=box_costs))
            self.kpt_assigner = TASK_UTILS.build(dict(type='HungarianAssigner',
                                                      match_costs=box_costs + kpt_costs))
        self.focal = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, reduction='sum')
        self.giou = GIoULoss(reduction='sum')
        self.oks = OKSLoss(reduction='none', mode='linear', norm_target_weight=True)

    def forward(self, stages: list[dict], targets: list[dict], img_shapes: list[tuple],
                num_phrases: list[int]) -> dict[str, Tensor]:
        """Losses of all stages; targets per sample as in :class:`~.transforms.PoseTargets`."""
        num_gts = max(sum(len(t['labels']) for t in targets), 1)
        losses = {}
        for i, stage in enumerate(stages):
            weight = 1.0 if i == len(stages) - 1 else self.aux_weight
            prefix = '' if i == len(stages) - 1 else f's{i}.'
            out = self._stage(stage, targets, img_shapes, num_phrases, num_gts)
            losses.update({f'{prefix}{k}': v * weight for k, v in out.items()})
        return losses

    def _stage(self, stage, targets, img_shapes, num_phrases, num_gts) -> dict[str, Tensor]:
        with_kpt = 'keypoints' in stage
        parts = {k: [] for k in (('cls', 'bbox', 'giou', 'kpt', 'oks', 'vis') if with_kpt
                                 else ('cls', 'bbox', 'giou'))}
        for b, (t, (h, w), p) in enumerate(zip(targets, img_shapes, num_phrases)):
            scale = stage['boxes'].new_tensor([w, h, w, h])
            k = t['keypoints'].shape[1]
            logits = stage['logits'][b, :, :p]
            boxes = bbox_cxcywh_to_xyxy(stage['boxes'][b]) * scale
            pred = InstanceData(scores=logits.detach(), bboxes=boxes.detach())
            kpt_w = ((t['keypoints'][..., 2] > 0) & t['kpt_valid']).float()
            gt = InstanceData(labels=t['labels'], bboxes=t['bboxes'])
            assigner = self.box_assigner
            if with_kpt:
                kxy = stage['keypoints'][b, :, :k] * scale[:2]
                pred.keypoints = kxy.detach()
                gt.keypoints, gt.keypoint_weights = t['keypoints'][..., :2], kpt_w
                gt.sigmas, gt.areas = t['sigmas'], t['areas']
                assigner = self.kpt_assigner
            result = assigner.assign(pred, gt, img_meta=dict(img_shape=(h, w)))
            q_idx = (result.gt_inds > 0).nonzero().squeeze(1)
            g_idx = result.gt_inds[q_idx] - 1
            labels = torch.full((logits.shape[0],), p, dtype=torch.long, device=logits.device)
            labels[q_idx] = t['labels'][g_idx]
            parts['cls'].append(self.focal(logits, labels) if p else logits.sum() * 0)
            pb, gb = boxes[q_idx] / scale, t['bboxes'][g_idx] / scale
            parts['bbox'].append(F.l1_loss(bbox_xyxy_to_cxcywh(pb), bbox_xyxy_to_cxcywh(gb),
                                           reduction='sum'))
            parts['giou'].append(self.giou(pb, gb) if len(q_idx) else pb.sum() * 0)
            if with_kpt:
                kw = kpt_w[g_idx]
                pk = stage['keypoints'][b, :, :k][q_idx]
                gk = t['keypoints'][g_idx, :, :2] / scale[:2]
                l1 = (pk - gk).abs().sum(-1) * kw
                parts['kpt'].append((l1.sum(-1) / kw.sum(-1).clamp(min=1)).sum())
                two_sigma = 2 * t['sigmas'][g_idx, :, None]
                oks = self.oks(kxy[q_idx] / two_sigma, t['keypoints'][g_idx, :, :2] / two_sigma,
                               kw, t['areas'][g_idx])
                has = kw.sum(-1) > 0
                parts['oks'].append((oks * has).sum())
                asked = stage['visibility'][b, :, :k]                              # Q, K
                vis_t = torch.zeros_like(asked)
                vis_t[q_idx] = kw
                parts['vis'].append(F.binary_cross_entropy_with_logits(asked, vis_t,
                                                                       reduction='mean'))
        out = {}
        for key, values in parts.items():
            total = torch.stack(values).sum()
            total = total / len(values) if key == 'vis' else total / num_gts
            out[f'loss_{key}'] = total * self.w[key]
        return out
