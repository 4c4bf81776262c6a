"""Pretrain a tiny ``AutoencoderKL`` on ShapesWorld pictures and save it as a local folder.

The paper's decoders run in the latent space of Stable Diffusion's pretrained, frozen VAE.
The tiny recipe has no such VAE, so this trains one on the data set's training pictures
(reconstruction MSE plus a small KL term, as SD's first stage without its GAN and LPIPS
terms, which need pretrained weights), then writes it with ``save_pretrained`` for
``vae=dict(pretrained=...)``. Its ``scaling_factor`` is set to one over the latents' standard
deviation on the validation pictures, as SD's is. Run from the repository root::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/vae_pretrain.py \\
        --data-root data/shapes_world_1shape --out-dir work_dirs/shapes_world_vae

Writes the folder, ``vae_pretrain.json`` (the analyser on the validation reconstructions,
MSE, minutes) and ``reconstructions.png`` (pictures over their reconstructions).
"""
import argparse
import json
import os.path as osp
import sys

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


def load_pictures(data_root: str, split: str, size: int) -> tuple[list[str], Tensor]:
    """Every picture the split's captions and edits name (each once), in [-1, 1], and the
    caption of each captioned one ('' for edit pictures)."""
    ann = osp.join(data_root, 'annotations')
    paths: dict[str, str] = {}
    for name, keys in (('captions', ('image',)), ('edits', ('source', 'target'))):
        path = osp.join(ann, f'{name}_{split}.jsonl')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path}: no such file (a ShapesWorld annotation)')
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    for k in keys:
                        paths.setdefault(row[k], row.get('caption', ''))
    # the decoders' own preprocessing (LoadDiffusionImages)
    images = [square_image(load_rgb(osp.join(data_root, 'images', p)), size)
              for p in tqdm(paths, desc=f'{split} pictures')]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return list(paths.values()), x


def pretrain_vae(data_root: str, out_dir: str, minutes: float = 20.0, max_iters: int = 0,
                 size: int = 64, crop: int = 32, batch_size: int = 16, lr: float = 1e-3,
                 kl_weight: float = 1e-6, seed: int = 0) -> dict:
    """Train a VAE for ``minutes`` (or ``max_iters`` > 0 iterations, whichever comes first)
    with a cosine learning rate over the budget, save it to ``out_dir``, and return the
    report. Training reads random ``crop``-px windows (the model is convolutional, so it
    encodes whole pictures afterwards)."""
    from vlm2.plugins.diffusion.metrics import shapes_scores
    torch.set_flush_denormal(True)  # Adam's denormal moments are slow on CPU
    torch.manual_seed(seed)
    _, train_x = load_pictures(data_root, 'train', size)
    captions, val_x = load_pictures(data_root, 'val', size)
    vae = AutoencoderKL(**VAE_CONFIG, sample_size=size)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step_loss() -> Tensor:
        x = train_x[torch.randint(0, len(train_x), (batch_size,), generator=gen)]
        if crop < size:
            i, j = torch.randint(0, size - crop + 1, (2,), generator=gen).tolist()
            x = x[:, :, i:i + crop, j:j + crop]
        posterior = vae.encode(x).latent_dist
        return F.mse_loss(vae.decode(posterior.sample(generator=gen)).sample, x) \
            + kl_weight * posterior.kl().mean()

    trained = train_within_budget(opt, step_loss, minutes, max_iters, desc='train (VAE)')
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(b).latent_dist.mode() for b in val_x.split(32)])
        recon = torch.cat([vae.decode(z).sample for z in latents.split(32)])
    vae.register_to_config(scaling_factor=1 / float(latents.std()))
    vae.save_pretrained(out_dir)
    refs, preds = to_uint8(val_x).numpy(), to_uint8(recon).numpy()
    scored = [i for i, c in enumerate(captions) if c]
    scores = shapes_scores([dict(task='gen', caption=captions[i], target_image=refs[i],
                                 pred_image=preds[i]) for i in scored])
    Image.fromarray(np.concatenate([np.concatenate(list(refs[:8]), 1),
                                    np.concatenate(list(preds[:8]), 1)])).save(
        osp.join(out_dir, 'reconstructions.png'))
    report = dict(**trained, val_mse=float(F.mse_loss(recon, val_x)),
                  latent_shape=list(latents.shape[1:]),
                  scaling_factor=vae.config.scaling_factor,
                  analyser_on_reconstructions=scores)
    with open(osp.join(out_dir, 'vae_pretrain.json'), 'w') as f:
        json.dump(report, f, indent=1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape')
    parser.add_argument('--out-dir', default='work_dirs/shapes_world_vae')
    parser.add_argument('--minutes', type=float, default=20.0)
    parser.add_argument('--max-iters', type=int, default=0, help='0: only the time budget')
    parser.add_argument('--size', type=int, default=64, help='picture side in pixels')
    parser.add_argument('--crop', type=int, default=32, help='training window side')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    report = pretrain_vae(args.data_root, args.out_dir, args.minutes, args.max_iters,
                          args.size, args.crop, args.batch_size, args.lr, seed=args.seed)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
