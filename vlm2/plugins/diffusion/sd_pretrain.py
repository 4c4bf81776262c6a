"""Pretrain a tiny Stable Diffusion on ShapesWorld captions and save it as a local folder.

The paper's [GEN] decoder is Stable Diffusion v1.5: a UNet pretrained on CLIP's text
embeddings, frozen while the super link learns to give it a condition it reads, with the
alignment loss pulling that condition towards CLIP's embedding of the caption. The tiny
recipe has no such UNet. This trains one, in the latents of the recipe's pretrained VAE, on
the embeddings of the recipe's frozen tiny CLIP text encoder (zero layers: token and position
embeddings and the final LayerNorm, drawn from a seed), then writes Stable Diffusion's layout
(``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) for ``unet=dict(pretrained=...,
subfolder='unet')`` and ``text_encoder=dict(pretrained=..., zero_padding=True)``. Run from
the repository root::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/sd_pretrain.py \\
        --data-root data/shapes_world_1shape --out-dir work_dirs/shapes_world_sd

The UNet is the config's [GEN] UNet (``--unet-options`` changes it); the unconditional
condition is zeros, the value a fresh :class:`SuperLinkConditioner`'s ``null`` starts from.
Writes the folder, ``sd_pretrain.json`` (the analyser on the validation captions,
sampled with the config's ``test_cfg``, from their exact conditions and from conditions with
noise) and ``samples.png``.

``cond_noise``: each training sample's caption tokens get Gaussian noise of a standard
deviation drawn uniformly from [0, ``cond_noise``] (conditioning augmentation, as cascaded
diffusion models noise their low-resolution condition, Ho et al. 2021). SD v1.5 learnt from
the continuum of CLIP embeddings of billions of captions; this UNet would see about 120
exact ones, and a frozen UNet that has read only those may draw nothing sensible from the
approximate condition the super link gives while it learns (the hypothesis the plugin
README's seventeenth-session section tests; with noise 0.3 on every word it scored as well as
from exact conditions).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vlm2.plugins.diffusion.budget import train_within_budget  # noqa: E402
from vlm2.plugins.diffusion.transforms import load_rgb, square_image, to_uint8  # noqa: E402

#: The recipe whose [GEN] decoder (UNet config, VAE, scheduler, text encoder) is pretrained.
CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), 'configs',
                  'visionllmv2_tiny_shapes_gen_vae.py')
#: What the issue's reference and the measured runs used beyond the recipe's UNet: the
#: flattened condition also enters the time embedding, with scale-shift normalisation
#: (plugin README, "A pretrained tiny Stable Diffusion").
UNET_OPTIONS = dict(class_embed_type='projection', resnet_time_scale_shift='scale_shift',
                    addition_embed_type=None)
#: Over the config's text encoder: zero past the caption's end (the README measures why).
TEXT_ENCODER_OPTIONS = dict(zero_padding=True)


def annotations(data_root: str, name: str) -> list[dict]:
    """The records of ShapesWorld's ``annotations/{name}.jsonl``; a clear error when the file
    is missing or empty."""
    path = osp.join(data_root, 'annotations', f'{name}.jsonl')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such file (a ShapesWorld annotation)')
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f'{path}: no record')
    return rows


def pictures(data_root: str, names: list[str], size: int, desc: str) -> torch.Tensor:
    """The pictures ``images/{name}`` in [-1, 1], (N, 3, size, size), through the decoders'
    own preprocessing (``square_image``)."""
    images = [square_image(load_rgb(osp.join(data_root, 'images', n)), size)
              for n in tqdm(names, desc=desc)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def latents(dec, x: torch.Tensor) -> torch.Tensor:
    """The latents of pictures ``x`` in [-1, 1] by decoder ``dec``'s VAE, from the posterior's
    mode (``decoder.encode``), 64 at a time."""
    with torch.no_grad():
        return torch.cat([dec.encode((b + 1) * 127.5) for b in
                          tqdm(x.split(64), desc='latents')])


def captioned(data_root: str, split: str, size: int) -> tuple[list[str], torch.Tensor]:
    """The captions of a split and their pictures in [-1, 1]."""
    rows = annotations(data_root, f'captions_{split}')
    return ([r['caption'] for r in rows],
            pictures(data_root, [r['image'] for r in rows], size, f'{split} pictures'))


def noisy(cond: torch.Tensor, sigma: torch.Tensor,
          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``cond`` (B, T, width) with Gaussian noise of standard deviation ``sigma``
    (broadcast over it) on its nonzero tokens; zero padding stays zero."""
    noise = torch.randn(cond.shape, generator=generator).to(cond)
    return cond + sigma.to(cond) * noise * (cond != 0).any(-1, keepdim=True)


def pretrain_sd(data_root: str, out_dir: str, minutes: float = 42.0, max_iters: int = 0,
                config: str = CONFIG, unet_options: Optional[dict] = None,
                cfg_options: Optional[dict] = None, batch_size: int = 16, lr: float = 1e-3,
                seed: int = 0, cond_noise: float = 0.5, eval_noise: float = 0.3) -> dict:
    """Train the UNet for ``minutes`` (or ``max_iters`` > 0 iterations,
    whichever comes first) with a cosine learning rate over the budget, save them to
    ``out_dir``, and return the report. ``cfg_options`` are merged into the config (as
    ``--cfg-options``), e.g. another VAE folder. ``eval_noise``: the standard deviation of
    the noise on the caption tokens in the second evaluation."""
    import vlm2.plugins.diffusion  # noqa: F401  registers the decoders
    from vlm2.plugins.diffusion.builders import FrozenTextEncoder
    from vlm2.plugins.diffusion.metrics import shapes_scores
    from vlm2.registry import MODELS
    init_default_scope('vlm2')
    torch.set_flush_denormal(True)  # Adam's denormal moments are slow on CPU
    torch.manual_seed(seed)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    key = f'{config}: model.super_link.decoders.gen'
    dec_cfg = cfg.model.super_link.decoders.gen.to_dict()
    if 'config' not in dec_cfg['unet']:
        raise ValueError(f'{key}.unet: pretraining builds the UNet from its config= '
                         '(unet=dict(config=...))')
    if not dec_cfg.get('text_encoder'):
        raise ValueError(f'{key}.text_encoder: pretraining conditions the UNet on a text '
                         'encoder\'s embedding of the caption; name one')
    unet_cfg = {**dec_cfg['unet']['config'], **UNET_OPTIONS, **(unet_options or {})}
    if unet_cfg.get('class_embed_type') == 'projection':
        unet_cfg['projection_class_embeddings_input_dim'] = (
            dec_cfg['conditioner'].get('num_tokens', 77) * unet_cfg['cross_attention_dim'])
    enc_cfg = dec_cfg.pop('text_encoder')
    dec = MODELS.build(dict(dec_cfg, unet=dict(config=unet_cfg), noise_repeats=1,
                            teacher_prob=0.0, llm_hidden_size=cfg.model.llm.config.hidden_size))
    text = FrozenTextEncoder(key=f'{key}.text_encoder', **{**enc_cfg, **TEXT_ENCODER_OPTIONS})
    if dec.vae is None:
        raise ValueError(f'{key}.vae: pretraining works in a VAE\'s latents; name one')

    train_caps, train_x = captioned(data_root, 'train', dec.image_size)
    val_caps, val_x = captioned(data_root, 'val', dec.image_size)
    def batches(captions: list[str], n: int = 50) -> list[list[str]]:
        return [captions[i:i + n] for i in range(0, len(captions), n)]

    train_z = latents(dec, train_x)  # once
    train_cond = torch.cat([text(c) for c in tqdm(batches(train_caps), desc='conditions')])
    opt = torch.optim.AdamW(dec.unet.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(0, len(train_cond), (batch_size,), generator=gen)
        sigma = torch.rand(batch_size, 1, 1, generator=gen) * cond_noise
        return dec.latent_loss(noisy(train_cond[idx], sigma, gen), train_z[idx])

    trained = train_within_budget(opt, step_loss, minutes, max_iters, desc='train (tiny SD)')
    dec.eval()
    refs = to_uint8(val_x).numpy()
    noise_gen = torch.Generator().manual_seed(seed)

    def analyse(sigma: float) -> tuple[dict, np.ndarray]:
        with torch.no_grad():
            images = torch.cat([dec.generate(noisy(text(c), torch.tensor(sigma), noise_gen))
                                for c in batches(val_caps)]).numpy()
        return shapes_scores([dict(task='gen', caption=c, target_image=r, pred_image=p)
                              for c, r, p in zip(val_caps, refs, images)]), images

    scores, images = analyse(0.0)
    noisy_scores, _ = analyse(eval_noise)
    os.makedirs(out_dir, exist_ok=True)
    dec.unet.save_pretrained(osp.join(out_dir, 'unet'))
    text.model.save_pretrained(osp.join(out_dir, 'text_encoder'))
    text.tokenizer.save_pretrained(osp.join(out_dir, 'tokenizer'))
    dec.scheduler.save_pretrained(osp.join(out_dir, 'scheduler'))
    grid = make_grid(torch.from_numpy(images[:24]).permute(0, 3, 1, 2), nrow=8, padding=0)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(osp.join(out_dir, 'samples.png'))
    report = dict(**trained, batch_size=batch_size, lr=lr, cond_noise=cond_noise,
                  num_train=len(train_caps), test_cfg=dec.test_cfg,
                  unet_options={**UNET_OPTIONS, **(unet_options or {})},
                  text_encoder_options=TEXT_ENCODER_OPTIONS,
                  analyser_on_val_captions=scores,
                  analyser_on_noisy_val_captions=dict(noise=eval_noise, **noisy_scores))
    with open(osp.join(out_dir, 'sd_pretrain.json'), 'w') as f:
        json.dump(report, f, indent=1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape')
    parser.add_argument('--out-dir', default='work_dirs/shapes_world_sd')
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--minutes', type=float, default=42.0)
    parser.add_argument('--max-iters', type=int, default=0, help='0: only the time budget')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cond-noise', type=float, default=0.5,
                        help='the largest standard deviation of the training noise on the '
                             'caption tokens (0: exact conditions)')
    parser.add_argument('--eval-noise', type=float, default=0.3)
    parser.add_argument('--unet-options', nargs='+', action=DictAction, default={},
                        help=f'UNet config entries over the config\'s and {UNET_OPTIONS}')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args()
    report = pretrain_sd(args.data_root, args.out_dir, args.minutes, args.max_iters,
                         args.config, args.unet_options, args.cfg_options, args.batch_size,
                         args.lr, args.seed, args.cond_noise, args.eval_noise)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
