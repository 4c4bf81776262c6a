"""Loads the decoder's own images: the target to generate and, for editing, the source."""
from typing import Optional

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from vlm2.registry import TRANSFORMS


def square_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` and centre-crop to ``size`` × ``size`` (SD's
    preprocessing); RGB uint8 in and out."""
    h, w = img.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = mmcv.imresize(img, (nw, nh), interpolation='area' if scale < 1 else 'bilinear')
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def load_rgb(path: str) -> np.ndarray:
    img = mmcv.imread(path, channel_order='rgb')
    if img is None:
        raise FileNotFoundError(f'image not found or unreadable: {path}')
    return img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 HxWx3 → uint8 (3, H, W)."""
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Pictures in [-1, 1], (B, 3, H, W) → uint8 (B, H, W, 3), the decoders' output."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


@TRANSFORMS.register_module()
class LoadDiffusionImages(BaseTransform):
    """Reads ``target_path`` (and ``source_path`` when present) and writes ``target_image``
    (and ``source_image``): uint8 (3, size, size) tensors, RGB.

    The images are resized and centre-cropped to ``size`` (ShapesWorld's 128 px pictures
    become the tiny model's 64 px). A source and target of different sizes would be
    cropped differently and come out misaligned, so ``on_size_mismatch`` decides:
    ``'resize'`` first resizes the source to the target's size (the pair then covers the
    same frame), counting how often it happened; ``'error'`` raises, naming both files.

    Args:
        size: the decoder's image side.
        on_size_mismatch: ``'resize'`` or ``'error'``.
    """

    def __init__(self, size: int, on_size_mismatch: str = 'error') -> None:
        if on_size_mismatch not in ('resize', 'error'):
            raise ValueError('LoadDiffusionImages.on_size_mismatch must be "resize" or '
                             f'"error", got {on_size_mismatch!r}')
        self.size = size
        self.on_size_mismatch = on_size_mismatch
        self.num_resized = 0

    def transform(self, results: dict) -> Optional[dict]:
        target = results.get('target_path')
        source = results.get('source_path')
        tgt = load_rgb(target) if target else None
        src = load_rgb(source) if source else None
        if tgt is not None and src is not None and src.shape[:2] != tgt.shape[:2]:
            if self.on_size_mismatch == 'error':
                raise ValueError(
                    f'source {source} is {src.shape[1]}x{src.shape[0]} but target {target} is '
                    f'{tgt.shape[1]}x{tgt.shape[0]}; set on_size_mismatch="resize" in the '
                    'LoadDiffusionImages transform to resize the source to the target')
            src = mmcv.imresize(src, (tgt.shape[1], tgt.shape[0]), interpolation='bilinear')
            self.num_resized += 1
            print_log(f'LoadDiffusionImages: resized source {source} to its target\'s size '
                      f'({self.num_resized} so far)', logger='current', level=30)
        if tgt is not None:
            results['target_image'] = to_tensor(square_image(tgt, self.size))
        if src is not None:
            results['source_image'] = to_tensor(square_image(src, self.size))
        return results
