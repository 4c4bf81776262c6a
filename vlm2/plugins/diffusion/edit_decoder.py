"""InstructPix2Pix-style editing through [EDIT]: the [GEN] decoder's machinery plus the source
image's latent on the UNet's input channels and InstructPix2Pix's two guidance scales."""
from typing import Optional

import torch
from torch import Tensor

from vlm2.registry import MODELS
from .decoder import DiffusionDecoder


@MODELS.register_module()
class ImageEditDecoder(DiffusionDecoder):
    """InstructPix2Pix-style editing through [EDIT] (its own table of 64 queries): the UNet
    reads the noisy latent and the source image's latent (8 channels with SD's VAE).

    Args:
        source_dropout: probability that a training sample's source latent is zeroed, so
            image guidance has an image-free prediction (InstructPix2Pix: 0.05).
    """

    routing_tokens = ('[EDIT]',)
    uses_source = True
    text_field = 'instruction'
    reads = ('target_image', 'source_image', 'instruction')

    def __init__(self, *args, cond_dropout: float = 0.05, source_dropout: float = 0.05,
                 **kwargs) -> None:
        super().__init__(*args, cond_dropout=cond_dropout, **kwargs)
        self.source_dropout = source_dropout

    def _drop_source(self, source: Tensor) -> Tensor:
        keep = torch.rand(source.shape[0], device=source.device) >= self.source_dropout
        return source * keep[:, None, None, None].to(source.dtype)

    def guided_noise(self, x: Tensor, t, cond: Tensor, null: Tensor, source: Optional[Tensor],
                     text_scale: float, image_scale: float) -> Tensor:
        """InstructPix2Pix guidance,
        e(∅,∅) + s_I·(e(∅,I) − e(∅,∅)) + s_T·(e(T,I) − e(∅,I)) (e(text, image));
        with s_I = 1.0 the image-free pass is skipped, with both 1.0 only e(T,I) runs."""
        if image_scale == 1.0:
            return super().guided_noise(x, t, cond, null, source, text_scale, image_scale)
        no_source = torch.zeros_like(source)
        out = self._unet(torch.cat([x, x, x]), t, torch.cat([cond, null, null]),
                         torch.cat([source, source, no_source]))
        full, image_only, neither = out.chunk(3)
        return neither + image_scale * (image_only - neither) + text_scale * (full - image_only)

