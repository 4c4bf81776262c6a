"""Pretrain a tiny InstructPix2Pix on ShapesWorld edits and save it as a local folder.

The paper's [EDIT] decoder starts from InstructPix2Pix: Stable Diffusion's UNet widened to 8
input channels (the source image's latent beside the noisy one) and trained on edit
triplets, conditioned on CLIP's embedding of the instruction. The super link then learns to
give it a condition it reads while the UNet keeps training. The tiny recipe's [EDIT] UNet
otherwise starts from the tiny SD (``sd_pretrain.py``) widened with zero weights, so within
the benchmark's minutes it must learn to read the source at all. This widens that UNet the
same way and trains it on ShapesWorld's triplets, in the same VAE's latents, on the same
frozen text encoder's embeddings of the instructions (with ``sd_pretrain.py``'s
conditioning noise), then writes Stable Diffusion's folder layout. Run from the repository
root after ``sd_pretrain.py``::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/ip2p_pretrain.py \\
        --sd work_dirs/shapes_world_sd --out-dir work_dirs/shapes_world_ip2p

More triplets help the additions: ``--data-root`` a larger one-shape ShapesWorld
(``make_shapes_world.py --max-shapes 1 --num-train 20000``) with ``--val-data-root`` the
benchmark's, so the score stays comparable (the plugin README's twenty-second session).

Writes ``ip2p_pretrain.json`` (edit accuracy of the validation triplets from the exact
instruction embeddings, sampled with the config's ``test_cfg``) and ``samples.png`` (rows of
source | edited | target).
"""
import argparse
import json
import os
import os.path as osp
import shutil
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

from vlm2.plugins.diffusion.budget import train_within_budget  # noqa: E402
from vlm2.plugins.diffusion.sd_pretrain import (annotations, latents, noisy,  # noqa: E402
                                                 pictures)
from vlm2.plugins.diffusion.transforms import to_uint8  # noqa: E402

#: The recipe whose [EDIT] decoder (VAE, scheduler, text encoder options) is pretrained.
CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), 'configs',
                  'visionllmv2_tiny_shapes_gen_sd.py')


def triplets(data_root: str, split: str, size: int) -> dict:
    """A split's edit triplets: instructions, edit types, and the source and target
    pictures in [-1, 1]."""
    rows = annotations(data_root, f'edits_{split}')
    return dict(instruction=[r['instruction'] for r in rows],
                edit_type=[r.get('edit_type', 'all') for r in rows],
                **{k: pictures(data_root, [r[k] for r in rows], size, f'{split} {k} pictures')
                   for k in ('source', 'target')})


def pretrain_ip2p(data_root: str, out_dir: str, sd: str, minutes: float = 15.0,
                  max_iters: int = 0, config: str = CONFIG,
                  cfg_options: Optional[dict] = None, batch_size: int = 16,
                  lr: float = 5e-4, seed: int = 0, cond_noise: float = 0.5,
                  val_root: Optional[str] = None) -> dict:
    """Widen the tiny SD folder ``sd``'s UNet to read the source latent, train it on edit
    triplets for ``minutes`` (or ``max_iters`` > 0 iterations) with a cosine learning rate
    over the budget, save the folder to ``out_dir`` and return the report. An ``sd`` folder
    this wrote (8 input channels) is read as it is: its training goes on, with a new cosine.
    ``val_root`` (default ``data_root``) gives the validation triplets, so a larger training
    set can be scored on the benchmark's own."""
    import vlm2.plugins.diffusion  # noqa: F401  registers the decoders
    from vlm2.plugins.diffusion.metrics import shapes_scores
    from vlm2.registry import MODELS
    init_default_scope('vlm2')
    torch.set_flush_denormal(True)  # Adam's denormal moments are slow on CPU
    torch.manual_seed(seed)
    if not osp.isdir(osp.join(sd, 'unet')):
        raise FileNotFoundError(f'{sd}: no tiny Stable Diffusion folder (unet/); write one '
                                'with sd_pretrain.py first')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    dec_cfg = cfg.model.super_link.decoders.edit.to_dict()
    dec_cfg.update(unet=dict(pretrained=sd, subfolder='unet'),
                   text_encoder=dict(dec_cfg.get('text_encoder') or {}, pretrained=sd),
                   noise_repeats=1, teacher_prob=0.0, align_contrast=None)
    dec = MODELS.build(dict(dec_cfg, llm_hidden_size=cfg.model.llm.config.hidden_size))
    if dec.vae is None or dec.text_encoder is None:
        raise ValueError(f'{config}: model.super_link.decoders.edit needs a vae and a '
                         'text_encoder to pretrain in latents on instruction embeddings')
    train = triplets(data_root, 'train', dec.image_size)
    val_root = val_root or data_root
    val = triplets(val_root, 'val', dec.image_size)

    def conditions(texts: list[str]) -> torch.Tensor:
        return torch.cat([dec.text_encoder(texts[i:i + 50]) for i in range(0, len(texts), 50)])

    src_z, tgt_z = latents(dec, train['source']), latents(dec, train['target'])
    cond = conditions(train['instruction'])
    opt = torch.optim.AdamW(dec.unet.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(0, len(cond), (batch_size,), generator=gen)
        sigma = torch.rand(batch_size, 1, 1, generator=gen) * cond_noise
        return dec.latent_loss(noisy(cond[idx], sigma, gen), tgt_z[idx], src_z[idx])

    dec.train()
    trained = train_within_budget(opt, step_loss, minutes, max_iters, desc='train (tiny IP2P)')
    dec.eval()
    val_src, val_cond = latents(dec, val['source']), conditions(val['instruction'])
    with torch.no_grad():
        edited = torch.cat([dec.generate(c, source=s) for c, s in
                            zip(val_cond.split(50), val_src.split(50))]).numpy()
    sources, targets = to_uint8(val['source']).numpy(), to_uint8(val['target']).numpy()
    samples = [dict(task='edit', instruction=i, edit_type=e, source_image=s, target_image=t,
                    pred_image=p) for i, e, s, t, p in zip(
                        val['instruction'], val['edit_type'], sources, targets, edited)]
    scores = shapes_scores(samples)
    os.makedirs(out_dir, exist_ok=True)
    dec.unet.save_pretrained(osp.join(out_dir, 'unet'))
    for part in ('text_encoder', 'tokenizer', 'scheduler'):  # the SD's, unchanged
        shutil.copytree(osp.join(sd, part), osp.join(out_dir, part), dirs_exist_ok=True)
    rows = [np.concatenate([sources[i], edited[i], targets[i]], 1)
            for i in range(min(8, len(edited)))]
    Image.fromarray(np.concatenate(rows, 0)).save(osp.join(out_dir, 'samples.png'))
    report = dict(**trained, sd=sd, data_root=data_root, val_root=val_root,
                  batch_size=batch_size, lr=lr, cond_noise=cond_noise,
                  num_train=len(cond), test_cfg=dec.test_cfg, analyser_on_val_edits=scores,
                  analyser_on_val_edits_add_at_reference=shapes_scores(
                      samples, add_place='reference'))
    with open(osp.join(out_dir, 'ip2p_pretrain.json'), 'w') as f:
        json.dump(report, f, indent=1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape')
    parser.add_argument('--val-data-root', default=None,
                        help='validation triplets from here (default: --data-root)')
    parser.add_argument('--sd', default='work_dirs/shapes_world_sd',
                        help='the tiny Stable Diffusion folder (sd_pretrain.py) to start from; '
                             'a folder this script wrote continues training as it is')
    parser.add_argument('--out-dir', default='work_dirs/shapes_world_ip2p')
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--minutes', type=float, default=15.0)
    parser.add_argument('--max-iters', type=int, default=0, help='0: only the time budget')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=5e-4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cond-noise', type=float, default=0.5,
                        help='the largest standard deviation of the training noise on the '
                             'instruction tokens (0: exact conditions)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args()
    report = pretrain_ip2p(args.data_root, args.out_dir, args.sd, args.minutes, args.max_iters,
                           args.config, args.cfg_options, args.batch_size, args.lr, args.seed,
                           args.cond_noise, args.val_data_root)
    print(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
