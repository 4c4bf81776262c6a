"""Any Hugging Face vision model as the image encoder of the MLLM."""
from typing import Optional

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from vlm2.registry import MODELS
from .hf_builders import build_hf_model


@MODELS.register_module()
class VisionTower(nn.Module):
    """Patch features of a HF vision tower (CLIP, SigLIP, ...), as the paper uses them.

    Features come from ``select_layer`` (paper: the second-to-last) with the CLS token dropped
    when the tower has one. Built from a local folder (``pretrained``) or a config dict.

    Args:
        pretrained / config / model_class: see :func:`~vlm2.models.hf_builders.build_hf_model`.
        select_layer: index into the tower's hidden states.
        pixel_shuffle: merge ``s``×``s`` neighbouring patches into one token of ``s²`` times
            the width (InternVL's pixel shuffle, used by the paper's InternViT variant): fine
            patches, few tokens.
        frozen: keep the tower frozen (paper: always); a from-scratch tiny tower trains.
    """

    def __init__(self,
                 pretrained: Optional[str] = None,
                 config: Optional[dict] = None,
                 model_class: str = 'AutoModel',
                 select_layer: int = -2,
                 pixel_shuffle: int = 1,
                 frozen: bool = True,
                 torch_dtype: Optional[str] = None) -> None:
        super().__init__()
        self.model = build_hf_model('model.vision_tower', pretrained, config, model_class,
                                    torch_dtype)
        self.select_layer = select_layer
        self.pixel_shuffle = pixel_shuffle
        self.frozen = frozen
        cfg = self.model.config
        cfg = getattr(cfg, 'vision_config', cfg)
        self.image_size: int = cfg.image_size
        self.patch_size: int = cfg.patch_size
        self.hidden_size: int = cfg.hidden_size
        if self.grid_size % pixel_shuffle:
            raise ValueError(f'model.vision_tower.pixel_shuffle={pixel_shuffle} must divide '
                             f'the {self.grid_size}-patch grid')
        if frozen:
            self.model.requires_grad_(False)
        else:
            self._freeze_unreached(getattr(cfg, 'num_channels', 3))

    def _freeze_unreached(self, channels: int) -> None:
        """Freeze the parameters the selected features do not depend on (layers after
        ``select_layer``, pooling heads): they would get no gradient, which distributed
        training rejects."""
        with torch.enable_grad():
            self.forward(torch.zeros(1, channels, self.image_size, self.image_size)).sum().backward()
        unreached = [n for n, p in self.model.named_parameters()
                     if p.requires_grad and p.grad is None]
        for p in self.model.parameters():
            p.grad = None
        for name, p in self.model.named_parameters():
            if name in unreached:
                p.requires_grad_(False)
        if unreached:
            print_log(f'VisionTower: {len(unreached)} parameter tensors do not reach layer '
                      f'{self.select_layer} and stay frozen (e.g. {unreached[0]})',
                      logger='current')

    @property
    def grid_size(self) -> int:
        """Patches per side of one tile."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per tile (what ``hidden_states`` returns per layer)."""
        return self.grid_size ** 2

    @property
    def num_tokens(self) -> int:
        """Feature tokens per tile after pixel shuffle (what the LLM sees)."""
        return (self.grid_size // self.pixel_shuffle) ** 2

    @property
    def out_channels(self) -> int:
        """Width of the features ``forward`` returns."""
        return self.hidden_size * self.pixel_shuffle ** 2

    def train(self, mode: bool = True) -> 'VisionTower':
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def hidden_states(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        """Every layer's patch features, (tiles, num_patches, hidden) each, CLS dropped."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(pixel_values=pixel_values.to(self.model.dtype),
                             output_hidden_states=True)
        return tuple(h[:, 1:] if h.shape[1] == self.num_patches + 1 else h
                     for h in out.hidden_states)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(tiles, 3, H, W) → (tiles, num_tokens, out_channels) of ``select_layer``."""
        return self.shuffle(self.hidden_states(pixel_values)[self.select_layer])

    def shuffle(self, feats: Tensor) -> Tensor:
        """(tiles, g*g, C) → (tiles, (g/s)^2, C*s*s), merging s×s neighbouring patches."""
        s = self.pixel_shuffle
        if s == 1:
            return feats
        n, g, c = feats.shape[0], self.grid_size, feats.shape[-1]
        x = feats.reshape(n, g // s, s, g // s, s, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(n, (g // s) ** 2, s * s * c)
