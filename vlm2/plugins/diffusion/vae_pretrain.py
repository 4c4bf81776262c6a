"""Pretrain a tiny ``AutoencoderKL`` on ShapesWorld pictures and save it as a local folder.

The paper's decoders run in the latent space of Stable Diffusion's pretrained, frozen VAE.
The tiny recipe has no such VAE, so this trains one on the data set's training pictures
(reconstruction MSE plus a small KL term, as SD's first stage without its GAN and LPIPS
terms, which need pretrained weights), then writes it with ``save_pretrained`` for
``vae=dict(pretrained=...)``. Its ``scaling_factor`` is set to one over the latents' standard
deviation on the validation pictures, as SD's is. Run from the repository root::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/vae_pretrain.py \\
        --data-root data/shapes_world_1shape --out-dir work_dirs/shapes_world_vae

Writes the folder, ``vae_pretrain.json`` (the analyser on the validation reconstructions:
of the captioned pictures, and of the edit targets scored as edits, the ceiling of any
[EDIT] decoder in these latents; MSE, minutes) and ``reconstructions.png`` (pictures over
their reconstructions).

It trains the whole VAE on crops, then its decoder alone on whole pictures.
``--vae FOLDER --minutes 0`` runs only the second stage on a VAE this wrote, keeping its
encoder and ``scaling_factor``: the latent space, and so the tiny SD and InstructPix2Pix
trained in it, stay valid (as SD's fine-tuned ``ft-MSE`` decoders replace the original).
"""
import argparse
import json
import os.path as osp
import sys
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vlm2.plugins.diffusion.budget import train_within_budget  # noqa: E402
from vlm2.plugins.diffusion.transforms import load_rgb, square_image, to_uint8  # noqa: E402

#: The tiny recipe's VAE: 4 latent channels at a quarter of the side (64 px → 16×16×4).
VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64, 64), norm_num_groups=8,
                  down_block_types=('DownEncoderBlock2D',) * 3,
                  up_block_types=('UpDecoderBlock2D',) * 3)


def load_pictures(data_root: str, split: str, size: int) -> tuple[list[dict], Tensor]:
    """Every picture the split's captions and edits name (each once), in [-1, 1], and the
    annotation row that names it: a caption's row, an edit's row for its target, ``{}`` for
    an edit's source."""
    ann = osp.join(data_root, 'annotations')
    rows: dict[str, dict] = {}  # picture path → its row
    for name in ('captions', 'edits'):
        path = osp.join(ann, f'{name}_{split}.jsonl')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path}: no such file (a ShapesWorld annotation)')
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if name == 'captions':
                        rows.setdefault(row['image'], row)
                    else:
                        rows.setdefault(row['source'], {})
                        rows[row['target']] = row
    # the decoders' own preprocessing (LoadDiffusionImages)
    images = [square_image(load_rgb(osp.join(data_root, 'images', p)), size)
              for p in tqdm(rows, desc=f'{split} pictures')]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return list(rows.values()), x


def pretrain_vae(data_root: str, out_dir: str, minutes: float = 20.0,
                 decoder_minutes: float = 15.0, max_iters: int = 0, size: int = 64,
                 crop: int = 32, batch_size: int = 16, lr: float = 1e-3,
                 decoder_lr: float = 3e-4, kl_weight: float = 1e-6, seed: int = 0,
                 vae: Optional[str] = None) -> dict:
    """Train a VAE (new, or the folder ``vae`` this wrote) in two stages, each with a cosine
    learning rate over its minutes (or ``max_iters`` > 0 iterations, whichever comes first),
    save it to ``out_dir``, and return the report.

    1. ``minutes``: the whole VAE on random ``crop``-px windows (it is convolutional, so it
       encodes whole pictures afterwards); then ``scaling_factor`` is set.
    2. ``decoder_minutes``: the decoder alone on whole pictures, on the frozen encoder's
       latents. The latent space stays as it is; the decoder's mid-block attention sees the
       whole latent it decodes at test time, not a crop's quarter of it.
    """
    from vlm2.plugins.diffusion.metrics import shapes_scores
    torch.set_flush_denormal(True)  # Adam's denormal moments are slow on CPU
    torch.manual_seed(seed)
    _, train_x = load_pictures(data_root, 'train', size)
    val_rows, val_x = load_pictures(data_root, 'val', size)
    vae_dir = vae
    vae = AutoencoderKL.from_pretrained(vae_dir) if vae_dir else \
        AutoencoderKL(**VAE_CONFIG, sample_size=size)
    gen = torch.Generator().manual_seed(seed)

    def train(parts: list[torch.nn.Module], stage_minutes: float, stage_lr: float,
              stage_crop: int, desc: str) -> dict:
        vae.requires_grad_(False)
        for part in parts:
            part.requires_grad_(True)
        whole = parts == [vae]

        def step_loss() -> Tensor:
            x = train_x[torch.randint(0, len(train_x), (batch_size,), generator=gen)]
            if stage_crop < size:
                i, j = torch.randint(0, size - stage_crop + 1, (2,), generator=gen).tolist()
                x = x[:, :, i:i + stage_crop, j:j + stage_crop]
            with torch.set_grad_enabled(whole):
                posterior = vae.encode(x).latent_dist
            loss = F.mse_loss(vae.decode(posterior.sample(generator=gen)).sample, x)
            return loss + kl_weight * posterior.kl().mean() if whole else loss

        opt = torch.optim.AdamW([p for part in parts for p in part.parameters()], lr=stage_lr)
        return train_within_budget(opt, step_loss, stage_minutes, max_iters, desc=desc)

    trained = {}
    if minutes > 0:
        trained['whole'] = train([vae], minutes, lr, crop, 'train (VAE)')
    if decoder_minutes > 0:
        trained['decoder'] = train([vae.decoder, vae.post_quant_conv], decoder_minutes,
                                   decoder_lr, size, 'train (VAE decoder)')
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(b).latent_dist.mode() for b in val_x.split(32)])
        recon = torch.cat([vae.decode(z).sample for z in latents.split(32)])
    if minutes > 0:  # a new latent space
        vae.register_to_config(scaling_factor=1 / float(latents.std()))
    vae.save_pretrained(out_dir)
    refs, preds = to_uint8(val_x).numpy(), to_uint8(recon).numpy()
    scores = shapes_scores([dict(task='gen', caption=r['caption'], target_image=refs[i],
                                 pred_image=preds[i])
                            for i, r in enumerate(val_rows) if r.get('caption')])
    # an edited target drawn exactly as the VAE reconstructs it: the edit metric's ceiling
    edits = shapes_scores([dict(task='edit', instruction=r['instruction'],
                                edit_type=r.get('edit_type', 'all'), target_image=refs[i],
                                pred_image=preds[i])
                           for i, r in enumerate(val_rows) if 'instruction' in r])
    Image.fromarray(np.concatenate([np.concatenate(list(refs[:8]), 1),
                                    np.concatenate(list(preds[:8]), 1)])).save(
        osp.join(out_dir, 'reconstructions.png'))
    report = dict(**trained, val_mse=float(F.mse_loss(recon, val_x)),
                  latent_shape=list(latents.shape[1:]),
                  scaling_factor=vae.config.scaling_factor,
                  vae=vae_dir,
                  analyser_on_reconstructions=scores,
                  analyser_on_edit_target_reconstructions=edits)
    with open(osp.join(out_dir, 'vae_pretrain.json'), 'w') as f:
        json.dump(report, f, indent=1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape')
    parser.add_argument('--out-dir', default='work_dirs/shapes_world_vae')
    parser.add_argument('--minutes', type=float, default=20.0,
                        help='training minutes of the whole VAE (0 with --vae: none)')
    parser.add_argument('--decoder-minutes', type=float, default=15.0,
                        help='then training minutes of the decoder alone, on whole pictures')
    parser.add_argument('--max-iters', type=int, default=0, help='0: only the time budget')
    parser.add_argument('--size', type=int, default=64, help='picture side in pixels')
    parser.add_argument('--crop', type=int, default=32, help='training window side')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--decoder-lr', type=float, default=3e-4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--vae', help='a VAE folder this wrote, to train on from')
    args = parser.parse_args()
    report = pretrain_vae(args.data_root, args.out_dir, args.minutes, args.decoder_minutes,
                          args.max_iters, args.size, args.crop, args.batch_size, args.lr,
                          args.decoder_lr, seed=args.seed, vae=args.vae)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
