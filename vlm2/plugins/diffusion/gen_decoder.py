"""Stable Diffusion-style text-to-image through [GEN]: the shared diffusion machinery with the
paper's split of a frozen pretrained UNet."""
from typing import Optional

from vlm2.registry import MODELS
from .decoder import DiffusionDecoder


@MODELS.register_module()
class TextToImageDecoder(DiffusionDecoder):
    """Text-to-image through [GEN] (its own table of 64 queries). The UNet is frozen with
    pretrained weights, as in the paper, unless ``train_unet=True``."""

    routing_tokens = ('[GEN]',)
    reads = ('target_image', 'caption')

    def __init__(self, *args, unet: dict, train_unet: Optional[bool] = None,
                 cond_dropout: float = 0.1, **kwargs) -> None:
        if train_unet is None:
            train_unet = 'pretrained' not in unet
        super().__init__(*args, unet=unet, train_unet=train_unet, cond_dropout=cond_dropout,
                         **kwargs)
