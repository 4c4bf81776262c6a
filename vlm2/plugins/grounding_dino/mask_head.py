"""mmdet's Grounding DINO head plus a MaskDINO-style mask branch and phrase-slot prediction."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmcv.ops import point_sample
from mmdet.models.dense_heads import GroundingDINOHead
from mmdet.models.layers import inverse_sigmoid
from mmdet.models.layers.transformer.utils import MLP
from mmdet.models.utils import get_uncertain_point_coords_with_randomness
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData
from torch import Tensor, nn


@MODELS.register_module(name='VLM2PhraseGroundingHead')
class PhraseGroundingHead(GroundingDINOHead):
    """Grounding DINO's head (contrastive classification against the phrase slots, box
    regression, CDN denoising losses) with an instance-mask branch (MaskDINO, Li et al. 2023):
    mask logits are the dot product of a query embedding (3-layer MLP of the last decoder
    layer's output) with a per-pixel embedding at 1/4 resolution (the stride-4 backbone map
    plus the upsampled first level of the encoder memory). Masks are trained with BCE and
    dice on points sampled around uncertain pixels (Mask2Former's rule), on the queries
    matched by a Hungarian assignment whose costs include the mask costs.

    Masks are predicted from the last decoder layer only and denoising queries carry no mask
    loss (MaskDINO uses every layer and mask denoising): a saving for CPU training.

    Args:
        pixel_in_channels: channels of the stride-4 backbone map.
        with_mask: build and train the mask branch.
        loss_mask / loss_dice: mmdet loss configs.
        num_points / oversample_ratio / importance_sample_ratio: point sampling of the loss.
        train_cfg: mmdet's, plus ``mask_assigner`` (used for the mask loss).
        others: as ``GroundingDINOHead``.
    """

    def __init__(self, *args, pixel_in_channels: int = 64, with_mask: bool = True,
                 loss_mask: Optional[dict] = None, loss_dice: Optional[dict] = None,
                 num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.with_mask = with_mask
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        if not with_mask:
            return
        d = self.embed_dims
        self.pixel_lateral = nn.Conv2d(pixel_in_channels, d, 1)
        self.pixel_out = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1), nn.GroupNorm(min(32, d // 4), d), nn.ReLU(inplace=True),
            nn.Conv2d(d, d, 1))
        self.mask_embed = MLP(d, d, d, 3)
        self.loss_mask = MODELS.build(loss_mask or dict(
            type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0))
        self.loss_dice = MODELS.build(loss_dice or dict(
            type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
            naive_dice=True, eps=1.0, loss_weight=5.0))
        self.mask_assigner = TASK_UTILS.build(self.train_cfg['mask_assigner']) \
            if self.train_cfg and 'mask_assigner' in self.train_cfg else None

    # ---- shared pieces --------------------------------------------------------------------
    def pixel_embed(self, pixel_feat: Tensor, memory_map: Tensor) -> Tensor:
        up = F.interpolate(memory_map, size=pixel_feat.shape[-2:], mode='bilinear',
                           align_corners=False)
        return self.pixel_out(self.pixel_lateral(pixel_feat) + up)

    def last_layer(self, hidden_states: Tensor, references: list, memory_text: Tensor,
                   text_token_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits and boxes (cxcywh, normalised) of the last decoder layer."""
        layer = len(hidden_states) - 1
        hs = hidden_states[layer]
        cls = self.cls_branches[layer](hs, memory_text, text_token_mask)
        box = (self.reg_branches[layer](hs) + inverse_sigmoid(references[layer])).sigmoid()
        return cls, box

    # ---- training -------------------------------------------------------------------------
    def loss(self, hidden_states: Tensor, references: list, memory_text: Tensor,
             text_token_mask: Tensor, enc_outputs_class: Tensor, enc_outputs_coord: Tensor,
             batch_data_samples: list, dn_meta: dict, memory_map: Tensor,
             pixel_feat: Tensor) -> dict:
        losses = super().loss(hidden_states, references, memory_text, text_token_mask,
                              enc_outputs_class, enc_outputs_coord, batch_data_samples, dn_meta)
        if self.with_mask:
            losses.update(self.loss_masks(hidden_states, references, memory_text,
                                          text_token_mask, batch_data_samples, dn_meta,
                                          memory_map, pixel_feat))
        return losses

    def loss_masks(self, hidden_states, references, memory_text, text_token_mask,
                   batch_data_samples, dn_meta, memory_map, pixel_feat) -> dict:
        num_dn = dn_meta['num_denoising_queries'] if dn_meta else 0
        hs = hidden_states[:, :, num_dn:]
        refs = [r[:, num_dn:] for r in references]
        cls, box = self.last_layer(hs, refs, memory_text, text_token_mask)
        pixel = self.pixel_embed(pixel_feat, memory_map)
        mask_logits = torch.einsum('bqc,bchw->bqhw', self.mask_embed(hs[-1]), pixel)
        preds, targets = [], []
        for i, sample in enumerate(batch_data_samples):
            gt = sample.gt_instances
            if 'masks' not in gt or len(gt) == 0:
                continue
            gt_masks = self._padded_masks(gt.masks, sample.metainfo['batch_input_shape'],
                                          mask_logits)
            q, g = self._match(cls[i], box[i], mask_logits[i], gt, gt_masks, sample.metainfo)
            preds.append(mask_logits[i, q])
            targets.append(gt_masks[g])
        zero = mask_logits.sum() * 0.0
        if not preds:
            return dict(loss_mask=zero, loss_dice=zero)
        preds, targets = torch.cat(preds)[:, None], torch.cat(targets)[:, None]
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                preds, None, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio)
            point_targets = point_sample(targets, coords).squeeze(1)
        point_preds = point_sample(preds, coords).squeeze(1)
        n = len(point_preds)
        return dict(loss_mask=self.loss_mask(point_preds.reshape(-1), point_targets.reshape(-1),
                                             avg_factor=n * self.num_points) + zero,
                    loss_dice=self.loss_dice(point_preds, point_targets, avg_factor=n) + zero)

    @staticmethod
    def _padded_masks(masks, batch_shape: tuple, like: Tensor) -> Tensor:
        """Ground-truth masks (BitmapMasks or tensor) zero-padded to the batch input size."""
        m = masks.to_tensor(dtype=like.dtype, device=like.device) \
            if hasattr(masks, 'to_tensor') else masks.to(like)
        h, w = batch_shape
        return F.pad(m.float(), (0, w - m.shape[-1], 0, h - m.shape[-2]))

    @torch.no_grad()
    def _match(self, cls: Tensor, box: Tensor, mask_logits: Tensor, gt: InstanceData,
               gt_masks: Tensor, img_meta: dict) -> tuple[Tensor, Tensor]:
        """Hungarian matching of one image with class, box and mask costs (points sampled
        uniformly, as Mask2Former does for its costs)."""
        coords = torch.rand((1, self.num_points, 2), device=cls.device)
        pred_points = point_sample(mask_logits[:, None], coords.expand(len(mask_logits), -1, -1))
        gt_points = point_sample(gt_masks[:, None], coords.expand(len(gt_masks), -1, -1))
        img_h, img_w = img_meta['img_shape']
        factor = box.new_tensor([img_w, img_h, img_w, img_h])
        pred = InstanceData(scores=cls, bboxes=bbox_cxcywh_to_xyxy(box) * factor,
                            masks=pred_points.squeeze(1))
        target = InstanceData(bboxes=gt.bboxes, labels=gt.labels, masks=gt_points.squeeze(1),
                              positive_maps=gt.positive_maps,
                              text_token_mask=gt.text_token_mask)
        result = (self.mask_assigner or self.assigner).assign(pred, target, img_meta=img_meta)
        q = torch.nonzero(result.gt_inds > 0).squeeze(-1)
        return q, result.gt_inds[q] - 1

    # ---- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def predict_phrases(self, hidden_states: Tensor, references: list, memory_text: Tensor,
                        text_token_mask: Tensor, memory_map: Tensor, pixel_feat: Tensor,
                        batch_data_samples: list, max_per_img: list[int]) -> list[InstanceData]:
        """Top-k over (query, phrase) scores of each image: boxes (original image pixels,
        xyxy), scores, labels (phrase slots) and, with the mask branch, boolean masks."""
        cls, box = self.last_layer(hidden_states, references, memory_text, text_token_mask)
        if self.with_mask:
            pixel = self.pixel_embed(pixel_feat, memory_map)
            queries = self.mask_embed(hidden_states[-1])
        results = []
        for i, sample in enumerate(batch_data_samples):
            meta = sample.metainfo
            num_phrases = int(text_token_mask[i].sum())
            scores = cls[i, :, :num_phrases].sigmoid()
            k = min(max_per_img[i], scores.numel())
            top, index = scores.flatten().topk(k)
            query, label = index // num_phrases, index % num_phrases
            img_h, img_w = meta['img_shape']
            boxes = bbox_cxcywh_to_xyxy(box[i, query]) * box.new_tensor(
                [img_w, img_h, img_w, img_h])
            boxes[:, 0::2].clamp_(0, img_w)
            boxes[:, 1::2].clamp_(0, img_h)
            boxes /= boxes.new_tensor(meta['scale_factor']).repeat(2)
            out = InstanceData(bboxes=boxes, scores=top, labels=label)
            if self.with_mask:
                out.masks = self._full_masks(queries[i, query], pixel[i], meta)
            results.append(out)
        return results

    @staticmethod
    def _full_masks(queries: Tensor, pixel: Tensor, meta: dict) -> Tensor:
        """Mask logits at 1/4 → padded input size → crop the image → original size, > 0."""
        logits = torch.einsum('qc,chw->qhw', queries, pixel)[None]
        pad_h, pad_w = meta['batch_input_shape']
        logits = F.interpolate(logits, size=(pad_h, pad_w), mode='bilinear', align_corners=False)
        img_h, img_w = meta['img_shape']
        logits = logits[..., :img_h, :img_w]
        logits = F.interpolate(logits, size=tuple(meta['ori_shape'][:2]), mode='bilinear',
                               align_corners=False)
        return logits[0] > 0
