"""Text-to-image ([GEN]) and instruction editing ([EDIT]) decoders driven by the super link.

Both are Stable Diffusion v1.5 style (diffusers' ``UNet2DConditionModel``, an optional
``AutoencoderKL`` and a noise scheduler) conditioned on the super link: the 64 query states
go through :class:`SuperLinkConditioner` to the 77 × ``cross_attention_dim`` sequence that
replaces CLIP's text embeddings. Editing is InstructPix2Pix style: the UNet also reads the
source image's latent, concatenated to the noisy latent on the channels (4 + 4 = 8 with
SD's VAE). This is their shared base; they are ``gen_decoder.py`` and ``edit_decoder.py``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from diffusers.training_utils import compute_snr
from torch import Tensor

from vlm2.models import BaseTaskDecoder
from vlm2.structures import LinkedPhrases, VLMDataSample
from .alignment import ContrastiveAlignment
from .builders import (FrozenTextEncoder, build_scheduler, build_unet, build_vae,
                       expand_conv_in, sampler_class)
from .conditioner import SuperLinkConditioner
from .image_results import ImageResults
from .transforms import load_rgb, square_image, to_tensor, to_uint8


class DiffusionDecoder(ImageResults, BaseTaskDecoder):
    """Shared machinery of the [GEN] and [EDIT] decoders.

    Reads ``target_image`` (uint8 (3, H, W), training), ``source_image`` (editing; at
    inference it falls back to the sample's own image ``img_path``) and the text field
    :attr:`text_field` (for the alignment loss). Writes ``pred_image`` (uint8 H×W×3 RGB).

    Args:
        llm_hidden_size: the LLM width (given by the super link).
        unet: ``dict(pretrained=folder, subfolder='unet')`` or ``dict(config=dict(...))``.
        scheduler: the training noise scheduler (``dict(type='DDPMScheduler', ...)``, or
            with ``pretrained=`` and ``subfolder='scheduler'``).
        sampler: the inference scheduler class, ``'DDIMScheduler'`` or
            ``'DPMSolverMultistepScheduler'``, built from the training scheduler's config.
        vae: an ``AutoencoderKL`` config (frozen); None runs in pixel space.
        pixel_patch: in pixel space, the image is folded into ``pixel_patch``² times more
            channels at a ``pixel_patch`` times smaller side (``pixel_unshuffle``), so a UNet
            works on 64 px pictures at the cost of 32 px ones.
        image_size: the side of generated images (pixels).
        train_unet: whether the UNet trains (paper: frozen for generation, trained for
            editing, with pretrained weights).
        text_encoder: a frozen CLIP text encoder, ``dict(pretrained=folder)`` or
            ``dict(config=..., tokenizer=..., seed=...)`` (:class:`FrozenTextEncoder`); when
            given, ``align_weight`` × MSE(condition, its caption embedding) is added.
        align_contrast: with a ``text_encoder``, ``dict(weight=, queue_size=256,
            temperature=0.1)`` adds ``weight`` × :class:`ContrastiveAlignment`, which asks
            each condition token to be nearer its caption's than other captions' (not the
            paper's; None, the default, leaves the paper's mean square alone).
        teacher_prob: with a ``text_encoder``, the probability that a training sample's
            denoising loss reads the frozen encoder's embedding of its text instead of the
            link's condition. Not the paper's: its UNet is pretrained on CLIP text
            embeddings, a UNet built from a config is not, and this lets it learn from a
            condition that tells prompts apart from the first step while the alignment loss
            brings the link's condition to the same place. Inference always reads the link.
        denoise_interval: with a ``text_encoder``, the denoising loss is computed on every
            ``denoise_interval``-th training step of this decoder and the steps between train
            on the alignment losses alone, which skip the VAE and the UNet, so a time budget
            holds several alignment steps per denoising step. Not the paper's (1, every
            step): through the link a pretrained UNet scores what it scores on the text
            encoder's exact embedding only as the condition comes near it (plugin README).
        cond_dropout: probability that a training sample's condition is replaced by the
            learned null condition (classifier-free guidance).
        noise_repeats: noise draws (each with its own timestep) per sample and training
            step, sharing the sample's condition and source: the UNet sees several noise
            levels per pass of the LLM (MAR's ``diffusion_batch_mul``, Li et al. 2024). The
            loss is their mean, so the condition's gradient keeps its scale.
        state_grad: the fraction of this decoder's gradient that reaches the query states (and
            through them the LLM and the query table); the conditioner always gets all of it.
            1.0 (the paper: trained end to end); 0.0 detaches the states, so the LLM learns
            from its language loss only.
        snr_gamma: when set, each sample's denoising MSE is weighted by min(SNR, γ) / SNR
            (ε target) or min(SNR, γ) / (SNR + 1) (v target), Min-SNR-γ (Hang et al. 2023;
            diffusers' ``--snr_gamma``, 5.0 there), which balances the noise levels so
            training converges faster. None: the plain mean.
        conditioner: ``num_tokens`` (77), ``num_heads``, ``ffn_ratio`` of the conditioner.
        test_cfg: ``num_steps``, ``guidance_scale`` (text), ``image_guidance_scale``
            (editing), ``seed``; each can be overridden per call of :meth:`generate`.
    """

    num_queries = 64
    uses_source = False
    text_field = 'caption'
    writes = ('pred_image',)

    def __init__(self, llm_hidden_size: int, unet: dict, scheduler: dict,
                 sampler: str = 'DDIMScheduler', vae: Optional[dict] = None,
                 pixel_patch: int = 1, image_size: int = 512, train_unet: bool = True,
                 text_encoder: Optional[dict] = None, align_weight: float = 0.1,
                 align_contrast: Optional[dict] = None,
                 teacher_prob: float = 0.0, denoise_interval: int = 1,
                 cond_dropout: float = 0.1, noise_repeats: int = 1,
                 state_grad: float = 1.0, snr_gamma: Optional[float] = None,
                 conditioner: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 routing_tokens=None,
                 num_queries: Optional[int] = None, init_cfg: Optional[dict] = None,
                 key: Optional[str] = None) -> None:
        super().__init__(llm_hidden_size, routing_tokens, num_queries, init_cfg)
        key = key or f'model.super_link.decoders.<{type(self).__name__}>'
        self.unet = build_unet(unet, f'{key}.unet')
        self.vae = build_vae(vae, f'{key}.vae')
        self.scheduler = build_scheduler(scheduler, f'{key}.scheduler')
        self.sampler_cls = sampler_class(sampler, f'{key}.sampler')
        self.image_size = image_size
        self.pixel_patch = pixel_patch
        if self.vae is not None:
            self.latent_channels = self.vae.config.latent_channels
            self.latent_size = image_size // 2 ** (len(self.vae.config.block_out_channels) - 1)
        else:
            if image_size % pixel_patch:
                raise ValueError(f'{key}.pixel_patch={pixel_patch} must divide image_size')
            self.latent_channels = 3 * pixel_patch ** 2
            self.latent_size = image_size // pixel_patch
        in_channels = self.latent_channels * (2 if self.uses_source else 1)
        if self.unet.config.in_channels != in_channels:
            if 'pretrained' in unet and self.unet.config.in_channels < in_channels:
                expand_conv_in(self.unet, in_channels)
            else:
                raise ValueError(f'{key}.unet: in_channels must be {in_channels} '
                                 f'({self.latent_channels} latent channels'
                                 f'{" × 2 with the source" if self.uses_source else ""}), got '
                                 f'{self.unet.config.in_channels}')
        if self.unet.config.out_channels != self.latent_channels:
            raise ValueError(f'{key}.unet: out_channels must be {self.latent_channels}, got '
                             f'{self.unet.config.out_channels}')
        self.unet.requires_grad_(train_unet)
        width = self.unet.config.cross_attention_dim
        self.conditioner = SuperLinkConditioner(llm_hidden_size, width, **(conditioner or {}))
        self.text_encoder = None
        if text_encoder is not None:
            self.text_encoder = FrozenTextEncoder(key=f'{key}.text_encoder', **text_encoder)
            if self.text_encoder.width != width:
                raise ValueError(f'{key}.text_encoder: its width {self.text_encoder.width} '
                                 f'differs from the UNet\'s cross_attention_dim {width}')
        self.align_weight = align_weight
        self.contrast, self.contrast_weight = None, 0.0
        if align_contrast is not None:
            if self.text_encoder is None:
                raise ValueError(f'{key}.align_contrast needs a text_encoder: it contrasts '
                                 'the condition with its embeddings of the texts')
            opts = dict(align_contrast)
            self.contrast_weight = float(opts.pop('weight', 1.0))
            self.contrast = ContrastiveAlignment(self.conditioner.queries.shape[0], width,
                                                 **opts)
        if not 0.0 <= teacher_prob <= 1.0:
            raise ValueError(f'{key}.teacher_prob must be in [0, 1], got {teacher_prob}')
        if teacher_prob and self.text_encoder is None:
            raise ValueError(f'{key}.teacher_prob={teacher_prob} needs a text_encoder: the '
                             'teacher condition is its embedding of the text')
        self.teacher_prob = teacher_prob
        self.denoise_interval = int(denoise_interval)
        if self.denoise_interval < 1 or (self.denoise_interval > 1 and self.text_encoder is None):
            raise ValueError(f'{key}.denoise_interval must be ≥ 1, and 1 without a text_encoder '
                             f'(the steps between have only the alignment loss), got '
                             f'{denoise_interval}')
        self.train_steps = 0  # this decoder's training steps, for denoise_interval
        self.cond_dropout = cond_dropout
        if int(noise_repeats) < 1:
            raise ValueError(f'{key}.noise_repeats must be ≥ 1, got {noise_repeats}')
        self.noise_repeats = int(noise_repeats)
        if not 0.0 <= state_grad <= 1.0:
            raise ValueError(f'{key}.state_grad must be in [0, 1], got {state_grad}')
        self.state_grad = state_grad
        if snr_gamma is not None and snr_gamma <= 0:
            raise ValueError(f'{key}.snr_gamma must be > 0 (or None), got {snr_gamma}')
        self.snr_gamma = snr_gamma
        self.test_cfg = {'num_steps': 20, 'guidance_scale': 3.0, 'image_guidance_scale': 1.5,
                         'seed': 0, **(test_cfg or {})}

    # ---- images <-> latents ---------------------------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) → latents (B, C, h, w)."""
        x = images.to(self.unet.device, torch.float32) / 127.5 - 1
        if self.vae is None:
            return F.pixel_unshuffle(x, self.pixel_patch) if self.pixel_patch > 1 else x
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """latents → uint8 (B, H, W, 3)."""
        latents = latents.float()
        if self.vae is None:
            x = F.pixel_shuffle(latents, self.pixel_patch) if self.pixel_patch > 1 else latents
        else:
            x = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return to_uint8(x)

    # ---- the super link's states ---------------------------------------------------------
    def _states(self, phrases: list[LinkedPhrases], training: bool) -> Tensor:
        """One phrase per sample, (B, num_queries, hidden); a training sample must have
        exactly one, extra phrases at inference are counted and ignored."""
        out, extra = [], 0
        for i, p in enumerate(phrases):
            states = p.select(*self.routing_tokens)
            if len(states) != 1 and (training or len(states) == 0):
                raise ValueError(f'{type(self).__name__}: sample {i} of the batch has '
                                 f'{len(states)} {"/".join(self.routing_tokens)} phrases; a '
                                 'training sample has exactly one image to make')
            extra += len(states) - 1
            out.append(states[0])
        if extra:
            print_log(f'{type(self).__name__}: {extra} extra phrases ignored (one image per '
                      'sample)', logger='current', level=30)
        return torch.stack(out)

    def _has_source(self, sample: VLMDataSample) -> bool:
        """Whether :meth:`_sources` finds an image to edit for ``sample`` (always true for a
        decoder that reads none)."""
        return (not self.uses_source or sample.get('source_image') is not None
                or bool(sample.metainfo.get('img_path')))

    def _sources(self, data_samples: list[VLMDataSample], device) -> Optional[Tensor]:
        if not self.uses_source:
            return None
        images = []
        for s in data_samples:
            img = s.get('source_image')
            if img is None:
                path = s.metainfo.get('img_path')
                if not self._has_source(s):
                    raise ValueError(f'{type(self).__name__}: sample '
                                     f'{s.metainfo.get("sample_id")} has neither a '
                                     'source_image nor an image to edit')
                img = to_tensor(square_image(load_rgb(path), self.image_size))
            images.append(torch.as_tensor(img))
        return self.encode(torch.stack(images).to(device))

    # ---- training --------------------------------------------------------------------------
    def loss(self, phrases: list[LinkedPhrases],
             data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        states = self._states(phrases, training=True)
        if self.state_grad < 1.0:  # the forward value is unchanged, the gradient scaled
            states = states.detach() + self.state_grad * (states - states.detach())
        cond = self.conditioner(states)
        losses = {}
        denoise = self.train_steps % self.denoise_interval == 0
        self.train_steps += 1
        if self.text_encoder is not None:
            texts = [str(s.get(self.text_field, '')) for s in data_samples]
            target = self.text_encoder(texts).to(cond.device)
            losses['loss_align'] = self.align_weight * F.mse_loss(cond.float(), target.float())
            if self.contrast is not None:
                losses['loss_align_contrast'] = self.contrast_weight * self.contrast(cond,
                                                                                     target)
            if not denoise:
                return losses
            if self.teacher_prob:
                teach = torch.rand(cond.shape[0], device=cond.device) < self.teacher_prob
                cond = torch.where(teach[:, None, None], target.to(cond.dtype), cond)
        losses['loss_diffusion'] = self.denoising_loss(cond, data_samples)
        return losses

    def denoising_loss(self, cond: Tensor, data_samples: list[VLMDataSample]) -> Tensor:
        """The denoising MSE of the samples' ``target_image`` under conditions (B, 77, width);
        see :meth:`latent_loss`."""
        for s in data_samples:
            if s.get('target_image') is None:
                raise ValueError(f'{type(self).__name__}: sample {s.metainfo.get("sample_id")} '
                                 'has no target_image (add LoadDiffusionImages to the pipeline '
                                 'and "target_image" to PackVLMInputs.fields)')
        target = self.encode(torch.stack([torch.as_tensor(s.target_image)
                                          for s in data_samples]))
        return self.latent_loss(cond, target, self._sources(data_samples, cond.device))

    def latent_loss(self, cond: Tensor, target: Tensor,
                    source: Optional[Tensor] = None) -> Tensor:
        """The denoising MSE of latents ``target`` (B, C, h, w) under conditions ``cond``,
        with condition (and source) dropout and ``noise_repeats`` noise draws per sample."""
        batch, device = cond.shape[0], cond.device
        drop = torch.rand(batch, device=device) < self.cond_dropout
        cond = torch.where(drop[:, None, None], self.conditioner.unconditional(batch).to(
            cond.dtype), cond)
        if source is not None:
            source = self._drop_source(source)
        if self.noise_repeats > 1:
            k = self.noise_repeats
            cond, target = cond.repeat_interleave(k, 0), target.repeat_interleave(k, 0)
            source = None if source is None else source.repeat_interleave(k, 0)
        noise = torch.randn_like(target)
        steps = torch.randint(0, self.scheduler.config.num_train_timesteps,
                              (target.shape[0],), device=device)
        noisy = self.scheduler.add_noise(target, noise, steps)
        if source is not None:
            noisy = torch.cat([noisy, source], dim=1)
        pred = self.unet_forward(noisy, steps, cond)
        if self.scheduler.config.prediction_type == 'v_prediction':
            goal = self.scheduler.get_velocity(target, noise, steps)
        else:
            goal = noise
        if self.snr_gamma is None:
            return F.mse_loss(pred.float(), goal.float())
        per_sample = F.mse_loss(pred.float(), goal.float(), reduction='none').mean((1, 2, 3))
        return (per_sample * self.snr_weights(steps)).mean()

    def unet_forward(self, x: Tensor, steps: Tensor, cond: Tensor) -> Tensor:
        """The UNet's prediction. A UNet with ``class_embed_type='projection'`` also reads the
        flattened condition through its time embedding (its ``class_labels``), so every
        ResNet block sees the prompt, not only the cross-attention layers."""
        labels = cond.flatten(1) if self.unet.config.class_embed_type == 'projection' else None
        return self.unet(x, steps, encoder_hidden_states=cond, class_labels=labels).sample

    def snr_weights(self, steps: Tensor) -> Tensor:
        """Min-SNR-γ loss weights of timesteps ``steps`` (see ``snr_gamma``)."""
        snr = compute_snr(self.scheduler, steps)
        weights = snr.clamp(max=self.snr_gamma)
        if self.scheduler.config.prediction_type == 'v_prediction':
            return weights / (snr + 1)
        return weights / snr.clamp(min=1e-8)

    def _drop_source(self, source: Tensor) -> Tensor:
        return source

    # ---- inference ---------------------------------------------------------------------------
    def predict(self, phrases: list[LinkedPhrases],
                data_samples: list[VLMDataSample]) -> list[VLMDataSample]:
        keep = [i for i, s in enumerate(data_samples) if self._has_source(s)]
        if len(keep) < len(data_samples):  # a reply that asks to edit with no image given
            print_log(f'{type(self).__name__}: {len(data_samples) - len(keep)} of '
                      f'{len(data_samples)} samples have no image to edit; no pred_image '
                      'for them', logger='current', level=30)
            if not keep:
                return data_samples
        with torch.no_grad():
            cond = self.conditioner(self._states([phrases[i] for i in keep], training=False))
            images = self.generate(cond, self._sources([data_samples[i] for i in keep],
                                                       cond.device))
        for i, img in zip(keep, images.cpu().numpy()):
            data_samples[i].pred_image = img
        return data_samples

    @torch.no_grad()
    def generate(self, cond: Tensor, source: Optional[Tensor] = None,
                 num_steps: Optional[int] = None, guidance_scale: Optional[float] = None,
                 image_guidance_scale: Optional[float] = None,
                 seed: Optional[int] = None) -> Tensor:
        """Sample images (uint8 (B, H, W, 3)) for conditions (B, 77, width).

        The initial noise comes from a CPU ``torch.Generator`` seeded with ``seed`` for the
        whole batch, and DDIM (eta 0) / DPM-Solver steps are deterministic, so the same seed,
        batch and conditions give bit-identical images.
        """
        cfg = self.test_cfg
        num_steps = num_steps or cfg['num_steps']
        scales = (cfg['guidance_scale'] if guidance_scale is None else guidance_scale,
                  cfg['image_guidance_scale'] if image_guidance_scale is None
                  else image_guidance_scale)
        seed = cfg['seed'] if seed is None else seed
        sampler = self.sampler_cls.from_config(self.scheduler.config)
        sampler.set_timesteps(num_steps, device=cond.device)
        gen = torch.Generator().manual_seed(int(seed))
        shape = (cond.shape[0], self.latent_channels, self.latent_size, self.latent_size)
        latents = (torch.randn(shape, generator=gen) * sampler.init_noise_sigma).to(cond.device)
        null = self.conditioner.unconditional(cond.shape[0]).to(cond.dtype)
        for t in sampler.timesteps:
            x = sampler.scale_model_input(latents, t)
            eps = self.guided_noise(x, t, cond, null, source, *scales)
            latents = sampler.step(eps, t, latents).prev_sample
        return self.decode(latents)

    def _unet(self, x: Tensor, t, cond: Tensor, source: Optional[Tensor]) -> Tensor:
        if source is not None:
            x = torch.cat([x, source], dim=1)
        steps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        return self.unet_forward(x, steps, cond)

    def guided_noise(self, x: Tensor, t, cond: Tensor, null: Tensor, source: Optional[Tensor],
                     text_scale: float, image_scale: float) -> Tensor:
        """Classifier-free guidance; a scale of 1.0 skips the unconditional pass."""
        if text_scale == 1.0:
            return self._unet(x, t, cond, source)
        both = self._unet(torch.cat([x, x]), t, torch.cat([null, cond]),
                          None if source is None else torch.cat([source, source]))
        uncond, conditional = both.chunk(2)
        return uncond + text_scale * (conditional - uncond)
