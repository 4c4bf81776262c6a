"""Any Hugging Face vision model as the image encoder of the MLLM."""
import hashlib
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import _load_checkpoint_with_prefix
from torch import Tensor, nn

from vlm2.registry import MODELS
from .hf_builders import build_hf_model


class ConvStem(nn.Sequential):
    """The early-convolution stem; ``weight`` is the last conv's, which HF towers read for
    the input dtype."""

    @property
    def weight(self) -> Tensor:
        return self[-1].weight


@MODELS.register_module()
class VisionTower(BaseModule):
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
        conv_stem: channel widths of an early-convolution stem that replaces the tower's
            patchify convolution (Xiao et al., "Early Convolutions Help Transformers See
            Better", 2021): one 3×3 stride-2 conv + BatchNorm + ReLU per width, then a 1×1
            conv to the tower's width, so ``log2(patch_size)`` widths give the same patch
            grid. For a tower trained from scratch, where a ViT's patchify stem learns
            shape slowly; ``None`` keeps the tower's own stem (pretrained towers).
        feature_cache: a frozen tower's features depend only on its input tile, so it may
            keep the hidden states of up to this many distinct tiles (keyed by a hash of
            their pixels and the autocast state) and return them when a tile comes again.
            A small data set trained for many epochs then pays the tower once per image
            (the tiny demo: 2,000 images seen 12 times). The same features up to float
            rounding (a tile's batch changes the kernels' blocking). Memory: tiles × layers
            × patches × width floats. 0 (default) keeps nothing; a tower that trains keeps
            nothing either (its features change every step), so a recipe that unfreezes
            the tower need not unset it.
        init_cfg: ``dict(type='Pretrained', checkpoint=path, prefix='vision_tower.')``
            loads the tower from an MMEngine checkpoint when training starts (a
            :class:`TowerPretrainer` run, or a whole :class:`VisionLLMv2`).
    """

    def __init__(self,
                 pretrained: Optional[str] = None,
                 config: Optional[dict] = None,
                 model_class: str = 'AutoModel',
                 select_layer: int = -2,
                 pixel_shuffle: int = 1,
                 frozen: bool = True,
                 conv_stem: Optional[Sequence[int]] = None,
                 feature_cache: int = 0,
                 torch_dtype: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if conv_stem and pretrained:
            raise ValueError('model.vision_tower: conv_stem would replace the patch embedding '
                             f'of the pretrained tower in {pretrained}; use it for towers '
                             'built from a config')
        self.model = build_hf_model('model.vision_tower', pretrained, config, model_class,
                                    torch_dtype)
        self.select_layer = select_layer
        self.pixel_shuffle = pixel_shuffle
        self.frozen = frozen
        self.feature_cache = int(feature_cache) if frozen else 0
        if feature_cache and not frozen:
            print_log(f'VisionTower: feature_cache={feature_cache} is off, the tower trains',
                      logger='current')
        self._cache: dict[bytes, tuple[Tensor, ...]] = {}
        # new weights (init_cfg's checkpoint, a resumed run) make the kept features stale
        self.register_load_state_dict_post_hook(lambda *_: self._cache.clear())
        cfg = self.model.config
        cfg = getattr(cfg, 'vision_config', cfg)
        self.image_size: int = cfg.image_size
        self.patch_size: int = cfg.patch_size
        self.hidden_size: int = cfg.hidden_size
        if self.grid_size % pixel_shuffle:
            raise ValueError(f'model.vision_tower.pixel_shuffle={pixel_shuffle} must divide '
                             f'the {self.grid_size}-patch grid')
        if conv_stem:
            self._replace_stem(list(conv_stem), getattr(cfg, 'num_channels', 3))
        if frozen:
            self.model.requires_grad_(False)
        else:
            self._freeze_unreached(getattr(cfg, 'num_channels', 3))

    def _replace_stem(self, widths: list[int], channels: int) -> None:
        """Swap the patchify ``Conv2d`` (``embeddings.patch_embedding`` of CLIP / SigLIP)
        for a stack of 3×3 stride-2 convs with the same output grid and width."""
        if 2 ** len(widths) != self.patch_size:
            raise ValueError(f'model.vision_tower.conv_stem: {len(widths)} stride-2 convs give '
                             f'{2 ** len(widths)}-px patches, the tower has '
                             f'{self.patch_size}-px ones; give log2(patch_size) widths')
        parent_name, found = next(((n.rpartition('.')[0], m) for n, m in
                                   self.model.named_modules()
                                   if n.endswith('patch_embedding') and
                                   isinstance(m, nn.Conv2d)), (None, None))
        if found is None:
            raise ValueError('model.vision_tower.conv_stem: the tower has no '
                             '`patch_embedding` Conv2d to replace')
        layers, c_in = [], channels
        for width in widths:
            layers += [nn.Conv2d(c_in, width, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.Conv2d(c_in, found.out_channels, 1))
        setattr(self.model.get_submodule(parent_name), 'patch_embedding', ConvStem(*layers))

    def _freeze_unreached(self, channels: int) -> None:
        """Freeze the parameters the selected features do not depend on (layers after
        ``select_layer``, pooling heads): they would get no gradient, which distributed
        training rejects."""
        training = self.model.training
        self.model.eval()  # a stem's BatchNorm must not count this blank probe in its stats
        with torch.enable_grad():
            self.forward(torch.zeros(1, channels, self.image_size, self.image_size)).sum().backward()
        self.model.train(training)
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

    def init_weights(self) -> None:
        """Loads ``init_cfg``'s checkpoint strictly.

        Written by hand because MMEngine's ``PretrainedInit`` loads with ``strict=False`` (a
        checkpoint of another tower would leave it random with a log line), and
        ``BaseModule.init_weights`` would call the HF model's own ``init_weights``.
        """
        if not self.init_cfg or self._is_init:
            return
        cfg = dict(self.init_cfg)
        if cfg.get('type') != 'Pretrained' or 'checkpoint' not in cfg:
            raise ValueError('model.vision_tower.init_cfg: expected dict(type="Pretrained", '
                             f'checkpoint=..., prefix=...), got {cfg}')
        path, prefix = cfg['checkpoint'], cfg.get('prefix', 'vision_tower.')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'model.vision_tower.init_cfg.checkpoint: {path} does not exist. Train it '
                'first with the tower-pretraining config that writes it (tools/train.py '
                'configs/visionllmv2/visionllmv2_tiny_tower_pretrain.py --work-dir '
                '<its folder>, as make demo does), or set '
                'model.vision_tower.init_cfg=None')
        state = _load_checkpoint_with_prefix(prefix, path, map_location='cpu')
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f'model.vision_tower.init_cfg.checkpoint: {path} (prefix '
                               f'{prefix!r}) does not fit this tower: {e}') from e
        print_log(f'VisionTower: loaded {len(state)} tensors from {path}', logger='current')
        self._is_init = True

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
        if not self.feature_cache:
            return self._hidden_states(pixel_values)
        keys = self._cache_keys(pixel_values)
        new = [i for i, k in enumerate(keys) if k not in self._cache]
        fresh = {}
        if new:
            out = self._hidden_states(pixel_values[new])
            for j, i in enumerate(new):
                fresh[keys[i]] = tuple(h[j] for h in out)
                if len(self._cache) < self.feature_cache:
                    self._cache[keys[i]] = tuple(h[j].clone() for h in out)
        feats = [fresh[k] if k in fresh else self._cache[k] for k in keys]
        return tuple(torch.stack(layer) for layer in zip(*feats))

    @staticmethod
    def _cache_keys(pixel_values: Tensor) -> list[bytes]:
        """One key per tile: a hash of its pixels, shape, dtype and the autocast state (the
        batch goes to the host once, and what is shared is built once)."""
        dev = pixel_values.device.type
        meta = repr((tuple(pixel_values.shape[1:]), pixel_values.dtype,
                     torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))).encode()
        host = pixel_values.detach().cpu().contiguous()
        return [hashlib.blake2b(meta + tile.view(-1).view(torch.uint8).numpy().tobytes(),
                                digest_size=16).digest() for tile in host]

    def _hidden_states(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
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
