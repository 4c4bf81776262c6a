"""Moves a collated batch to the device and normalises the image tiles."""
from typing import Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from vlm2.registry import MODELS

CLIP_MEAN = (122.770938, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)


@MODELS.register_module()
class VLMDataPreprocessor(BaseDataPreprocessor):
    """Stacks every sample's tiles (RGB uint8, (tiles, 3, H, W)) into one normalised batch.

    Returns ``inputs=dict(pixel_values, num_tiles)``; ``pixel_values`` is None when no
    sample of the batch has an image. Tokenisation happens in the model, which owns the
    tokenizer and the super link.
    """

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 non_blocking: bool = False) -> None:
        super().__init__(non_blocking=non_blocking)
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        tiles: list = data.get('inputs') or []
        num_tiles = [0 if t is None else int(t.shape[0]) for t in tiles]
        present = [t for t in tiles if t is not None and t.shape[0]]
        pixel_values = None
        if present:
            pixel_values = (torch.cat(present).float() - self.mean) / self.std
        return dict(inputs=dict(pixel_values=pixel_values, num_tiles=num_tiles),
                    data_samples=data.get('data_samples'))
