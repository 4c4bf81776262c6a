"""The [DEPTH] decoder: a small FPN-style dense head on the decoder's own image, modulated
by the super-link embedding (FiLM), predicting a metric depth map at input resolution."""
from typing import Optional, Sequence

import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.logging import print_log
from torch import Tensor, nn

from vlm2.models import BaseTaskDecoder
from vlm2.registry import MODELS
from vlm2.structures import LinkedPhrases, VLMDataSample
from .losses import gradient_matching_loss, silog_loss
from .visualization import colorize_depth

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class DepthDecoder(BaseTaskDecoder):
    """Monocular depth from the decoder's own image, steered by the ``[DEPTH]`` queries.

    A conv encoder (strides 2-16) feeds an FPN top-down path (as mmdet's FPN, fused to
    stride 2 as in Panoptic FPN's semantic head); every level is modulated by FiLM
    (``x * (1 + gamma) + beta``) from the mean of the phrase's query states, so the LLM's
    embedding conditions the dense prediction. The head outputs log-depth bounded to
    ``[min_depth, max_depth]``, upsampled to the input resolution.

    Data-sample fields:
        reads: ``depth_image`` (RGB uint8 (S, S, 3); at inference, when absent, the image is
            read from ``img_path``), ``gt_depth`` (float32 metres, 0 = invalid; training).
        writes: ``pred_depth`` (float32 metres at the image's resolution, ``ori_shape``).

    Args:
        channels: widths of the four encoder stages.
        fpn_channels: width of the FPN and of the head.
        image_size: side of the decoder's image (used when it is read from ``img_path``).
        min_depth / max_depth: output range in metres.
        silog_lambda: variance weight of the scale-invariant log loss (0.85, as BTS).
        grad_weight / grad_scales: weight and number of scales of gradient matching.
    """
    routing_tokens = ('[DEPTH]',)
    num_queries = 4
    reads = ('depth_image', 'gt_depth')
    writes = ('pred_depth',)

    def __init__(self, llm_hidden_size: int, channels: Sequence[int] = (16, 32, 64, 96),
                 fpn_channels: int = 32, image_size: int = 128, min_depth: float = 0.5,
                 max_depth: float = 10.0, silog_lambda: float = 0.85, grad_weight: float = 0.5,
                 grad_scales: int = 4, **kwargs) -> None:
        super().__init__(llm_hidden_size, **kwargs)
        self.image_size = image_size
        self.min_depth, self.max_depth = min_depth, max_depth
        self.silog_lambda = silog_lambda
        self.grad_weight, self.grad_scales = grad_weight, grad_scales
        norm = dict(type='BN')
        self.stages = nn.ModuleList()
        c_in = 3
        for c in channels:  # each stage halves the resolution
            self.stages.append(nn.Sequential(
                ConvModule(c_in, c, 3, stride=2, padding=1, norm_cfg=norm),
                ConvModule(c, c, 3, padding=1, norm_cfg=norm)))
            c_in = c
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_channels, 1) for c in channels)
        self.smooth = nn.ModuleList(ConvModule(fpn_channels, fpn_channels, 3, padding=1,
                                               norm_cfg=norm) for _ in channels)
        self.film = nn.Sequential(nn.Linear(llm_hidden_size, llm_hidden_size), nn.GELU(),
                                  nn.Linear(llm_hidden_size, 2 * fpn_channels * len(channels)))
        nn.init.zeros_(self.film[-1].weight)  # starts as the identity modulation
        nn.init.zeros_(self.film[-1].bias)
        self.head = nn.Sequential(ConvModule(fpn_channels, fpn_channels, 3, padding=1,
                                             norm_cfg=norm),
                                  nn.Conv2d(fpn_channels, 1, 1))
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    # ---- the network ------------------------------------------------------------------
    def _images(self, data_samples: list[VLMDataSample]) -> Tensor:
        """The decoder's images, normalised, (B, 3, S, S)."""
        images = []
        for s in data_samples:
            img = s.get('depth_image')
            if img is None:  # tools/infer.py packs no decoder fields: read img_path
                path = s.metainfo.get('img_path')
                if not path:
                    raise ValueError(f'sample {s.metainfo.get("sample_id")}: no depth_image '
                                     'and no img_path to read the decoder image from')
                img = mmcv.imresize(mmcv.imread(path, channel_order='rgb'),
                                    (self.image_size, self.image_size), backend='pillow')
            images.append(torch.as_tensor(np.ascontiguousarray(img)).permute(2, 0, 1))
        x = torch.stack(images).to(self.mean.device).float()
        return (x - self.mean) / self.std

    def forward_log_depth(self, images: Tensor, embedding: Tensor) -> Tensor:
        """Log-depth (B, 1, S, S) of normalised images, modulated by ``embedding`` (B, hidden)."""
        feats, x = [], images
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        gammas_betas = self.film(embedding).view(len(images), len(feats), 2, -1, 1, 1)
        out = None
        for i in reversed(range(len(feats))):  # FPN top-down path
            lat = self.lateral[i](feats[i])
            if out is not None:
                lat = lat + F.interpolate(out, size=lat.shape[-2:], mode='bilinear',
                                          align_corners=False)
            gamma, beta = gammas_betas[:, i, 0], gammas_betas[:, i, 1]
            out = self.smooth[i](lat * (1 + gamma) + beta)
        logit = self.head(out)
        logit = F.interpolate(logit, size=images.shape[-2:], mode='bilinear', align_corners=False)
        lo, hi = np.log(self.min_depth), np.log(self.max_depth)
        return lo + (hi - lo) * torch.sigmoid(logit)

    def _run(self, phrases: list[LinkedPhrases], data_samples: list[VLMDataSample]) -> Tensor:
        # one [DEPTH] phrase per sample; a reply with several uses its first one
        extra = sum(max(len(p.select('[DEPTH]')) - 1, 0) for p in phrases)
        if extra:
            print_log(f'DepthDecoder: {extra} extra [DEPTH] phrase(s) ignored', logger='current')
        embedding = torch.stack([p.select('[DEPTH]')[0].mean(0) for p in phrases]).float()
        # the dense head runs in float32 (log-depth losses are sensitive to bf16 rounding)
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            return self.forward_log_depth(self._images(data_samples), embedding)

    # ---- the contract ---------------------------------------------------------------
    def loss(self, phrases: list[LinkedPhrases],
             data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        log_pred = self._run(phrases, data_samples)
        silog, grad = [], []
        for pred, s in zip(log_pred, data_samples):
            if s.get('gt_depth') is None:
                raise ValueError(f'sample {s.metainfo.get("sample_id")}: no gt_depth to train on')
            gt = torch.as_tensor(s.gt_depth, device=pred.device).float()
            pred = F.interpolate(pred[None], size=gt.shape, mode='bilinear',
                                 align_corners=False)[0, 0]  # the input resolution
            valid = gt > 0
            if not valid.any():
                raise ValueError(f'sample {s.metainfo.get("sample_id")}: no valid depth')
            diff = torch.where(valid, pred - gt.clamp(min=1e-6).log(), 0.0)
            silog.append(silog_loss(diff, valid, self.silog_lambda))
            grad.append(gradient_matching_loss(diff, valid, self.grad_scales))
        return dict(loss_silog=torch.stack(silog).mean(),
                    loss_grad=self.grad_weight * torch.stack(grad).mean())

    @torch.no_grad()
    def predict(self, phrases: list[LinkedPhrases],
                data_samples: list[VLMDataSample]) -> list[VLMDataSample]:
        log_pred = self._run(phrases, data_samples)
        for pred, s in zip(log_pred, data_samples):
            shape = s.metainfo.get('ori_shape') or (
                s.gt_depth.shape if s.get('gt_depth') is not None else pred.shape[-2:])
            pred = F.interpolate(pred[None], size=tuple(shape[:2]), mode='bilinear',
                                 align_corners=False)[0, 0]
            s.pred_depth = pred.exp().cpu().numpy().astype(np.float32)
        return data_samples

    def format_results(self, data_sample: VLMDataSample) -> dict:
        depth = data_sample.get('pred_depth')
        if depth is None:
            return {}
        return dict(unit='m', shape=list(depth.shape), min=float(depth.min()),
                    max=float(depth.max()), depth=np.round(depth, 3).tolist())

    def draw(self, image: np.ndarray, data_sample: VLMDataSample) -> Optional[np.ndarray]:
        """The image and its colour-mapped depth side by side (near: bright, far: dark)."""
        depth = data_sample.get('pred_depth')
        if depth is None:
            return None
        coloured = colorize_depth(depth, self.min_depth, self.max_depth)
        if image is None or image.shape[:2] != depth.shape:
            return coloured
        return np.concatenate([image, coloured], axis=1)
