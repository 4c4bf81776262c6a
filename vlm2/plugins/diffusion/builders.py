"""Builders of the diffusers parts from a config: a local pretrained folder or a config.

Nothing touches the hub: ``from_pretrained`` gets ``local_files_only=True`` and paths are
checked to be local folders first.
"""
import os.path as osp
from typing import Optional

import diffusers
import torch
from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
from torch import nn

from vlm2.models.hf_builders import check_local_folder

#: The inference schedulers a config may name (``sampler=``).
SAMPLERS = ('DDIMScheduler', 'DPMSolverMultistepScheduler')


def _pretrained(cls, cfg: dict, key: str):
    path = check_local_folder(cfg['pretrained'], f'{key}.pretrained')
    sub = cfg.get('subfolder')
    if sub and not osp.isdir(osp.join(path, sub)):
        raise FileNotFoundError(f'{key}.subfolder: {osp.join(path, sub)!r} is not a folder')
    return cls.from_pretrained(path, subfolder=sub, local_files_only=True)


def _one_of(cfg: dict, key: str) -> None:
    if ('pretrained' in cfg) == ('config' in cfg):
        raise ValueError(f'{key}: give exactly one of pretrained= (a local folder, optionally '
                         'with subfolder=) or config= (the class\'s constructor arguments)')


def build_unet(cfg: dict, key: str) -> UNet2DConditionModel:
    """A ``UNet2DConditionModel`` from ``dict(pretrained=, subfolder=)`` or ``dict(config=)``."""
    _one_of(cfg, key)
    if 'pretrained' in cfg:
        return _pretrained(UNet2DConditionModel, cfg, key)
    return UNet2DConditionModel(**cfg['config'])


def build_vae(cfg: Optional[dict], key: str) -> Optional[AutoencoderKL]:
    """An ``AutoencoderKL`` (frozen), or None for a pixel-space model."""
    if cfg is None:
        return None
    _one_of(cfg, key)
    vae = _pretrained(AutoencoderKL, cfg, key) if 'pretrained' in cfg \
        else AutoencoderKL(**cfg['config'])
    return vae.requires_grad_(False).eval()


def build_scheduler(cfg: dict, key: str) -> SchedulerMixin:
    """The training noise scheduler: ``dict(type='DDPMScheduler', ...)`` or a pretrained
    ``scheduler`` folder (``dict(type='DDPMScheduler', pretrained=..., subfolder=...)``)."""
    cfg = dict(cfg)
    name = cfg.pop('type', 'DDPMScheduler')
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f'{key}.type must name a diffusers scheduler, got {name!r}')
    if 'pretrained' in cfg:
        return _pretrained(cls, cfg, key)
    return cls(**cfg)


def sampler_class(name: str, key: str) -> type:
    """The diffusers scheduler class used for sampling (DDIM or DPM-Solver)."""
    if name not in SAMPLERS:
        raise ValueError(f'{key}: the sampler must be one of {SAMPLERS}, got {name!r}')
    return getattr(diffusers, name)


def expand_conv_in(unet: UNet2DConditionModel, in_channels: int) -> None:
    """Widen the UNet's first conv to ``in_channels``; the new input channels start at zero,
    so a pretrained text-to-image UNet is unchanged at first (InstructPix2Pix's recipe)."""
    old = unet.conv_in
    if old.in_channels >= in_channels:
        raise ValueError(f'cannot widen conv_in from {old.in_channels} to {in_channels}')
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)


class FrozenTextEncoder(nn.Module):
    """A frozen CLIP text encoder and its tokenizer; gives the 77 × width embedding of a text
    that the alignment loss compares the condition with.

    ``pretrained``: a local folder (the SD layout: ``text_encoder/`` and ``tokenizer/``
    subfolders, or one folder holding both). ``config``: ``CLIPTextConfig`` fields and a
    ``tokenizer`` (a ``TOKENIZERS`` config), for tiny models and tests with no pretrained
    CLIP: the weights are drawn from ``seed`` and stay frozen. Random layers mix the words until
    captions look alike, so the tiny recipe uses zero layers (plugin README).
    ``zero_padding``: the embedding is zero past the text's end (the padding tokens), so it
    carries the text's words only; a UNet that reads the whole flattened condition through
    its time embedding learnt faster on it (plugin README, "A pretrained tiny Stable
    Diffusion"). For tokenizers with a padding token of their own (CLIP's pads with its end
    token, which would be zeroed too).
    """

    def __init__(self, key: str, pretrained: Optional[str] = None,
                 config: Optional[dict] = None, tokenizer: Optional[dict] = None,
                 seed: int = 0, max_length: int = 77, zero_padding: bool = False) -> None:
        super().__init__()
        from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel
        _one_of({k: v for k, v in dict(pretrained=pretrained, config=config).items()
                 if v is not None}, key)
        if pretrained:
            check_local_folder(pretrained, f'{key}.pretrained')
            enc = osp.join(pretrained, 'text_encoder')
            tok = osp.join(pretrained, 'tokenizer')
            enc = enc if osp.isdir(enc) else pretrained
            tok = tok if osp.isdir(tok) else pretrained
            self.tokenizer = AutoTokenizer.from_pretrained(tok, local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(enc, local_files_only=True)
        else:
            if tokenizer is None:
                raise ValueError(f'{key}: a config= text encoder needs tokenizer= '
                                 '(a TOKENIZERS config)')
            from vlm2.registry import TOKENIZERS
            self.tokenizer = TOKENIZERS.build(tokenizer)
            clip = CLIPTextConfig(**{'vocab_size': len(self.tokenizer),
                                     'max_position_embeddings': max_length,
                                     'pad_token_id': self.tokenizer.pad_token_id,
                                     'eos_token_id': self.tokenizer.eos_token_id,
                                     'bos_token_id': self.tokenizer.bos_token_id, **config})
            with torch.random.fork_rng(devices=[]):  # the global RNG stream stays as it was
                torch.manual_seed(seed)
                self.model = CLIPTextModel(clip)
        self.model.requires_grad_(False).eval()
        self.max_length = max_length
        self.zero_padding = zero_padding

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def train(self, mode: bool = True) -> 'FrozenTextEncoder':
        return super().train(False)  # always eval: it is frozen

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids, (B, max_length)."""
        return self.tokenizer(texts, padding='max_length', max_length=self.max_length,
                              truncation=True, return_tensors='pt').input_ids

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, max_length, width) embeddings of token ids (with gradients where the weights
        have them)."""
        out = self.model(ids.to(self.model.device)).last_hidden_state
        if self.zero_padding:
            out = out * (ids != self.tokenizer.pad_token_id).to(out)[..., None]
        return out

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.embed(self.tokenize(texts))
