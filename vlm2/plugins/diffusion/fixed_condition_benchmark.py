"""The reference the super link must reach: the recipe's [GEN] UNet trained alone, conditioned
on a frozen text encoder's embedding of the caption (no LLM, no query states), then scored on
the same held-out prompts as ``benchmark.py``.

The issue asks that the 64-query conditioning reach at least what fixed embeddings reach;
this measures what fixed embeddings reach with the same UNet, scheduler, sampler, images and
time budget on this machine. Run from the repository root (2 CPU cores)::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/fixed_condition_benchmark.py \\
        --data-root data/shapes_world --budget-min 8

The condition is the config's ``text_encoder`` of the [GEN] decoder (default: the tiny
recipe's zero-layer CLIP text encoder, where every word is its own direction at its own
place). It writes ``fixed_condition.json`` and ``grid.png`` to the work dir.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.model import ExponentialMovingAverage  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vlm2.plugins.diffusion.benchmark import (RECIPE, ensure_one_shape_world,  # noqa: E402
                                              one_shape_subsets)
from vlm2.registry import DATASETS, METRICS, MODELS  # noqa: E402


def load_samples(cfg: Config, data_root: str, ann_file: str) -> list:
    """The packed samples of a caption→image source (its ``target_image`` and ``caption``)."""
    ds = DATASETS.build(dict(cfg.gen_train, data_root=osp.abspath(data_root) + '/',
                             ann_file=ann_file))
    return [ds[i]['data_samples'] for i in tqdm(range(len(ds)), desc=osp.basename(ann_file))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape',
                        help='a ShapesWorld folder; written (one shape per image) if missing')
    parser.add_argument('--config', default=RECIPE,
                        help='a generation recipe whose [GEN] decoder names a text_encoder')
    parser.add_argument('--work-dir', default='work_dirs/diffusion_fixed_condition')
    parser.add_argument('--budget-min', type=float, default=8.0, help='training minutes')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=None,
                        help="AdamW learning rate (default: the recipe's optimizer lr)")
    parser.add_argument('--ema-momentum', type=float, default=None,
                        help="sample from an exponential moving average of the UNet's weights "
                             "(MMEngine's ExponentialMovingAverage, as EMAHook keeps it; e.g. "
                             "0.01 averages over about the last 100 steps)")
    parser.add_argument('--guidance-scales', type=float, nargs='+', default=None,
                        help="score the trained UNet at each of these text guidance scales "
                             "(default: the recipe's test_cfg); the first one's images go "
                             "to grid.png")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # as benchmark.py: Adam's denormal moments are slow
    os.makedirs(args.work_dir, exist_ok=True)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope('vlm2')
    import vlm2.plugins.diffusion  # noqa: F401  registers the decoder
    dec_cfg = cfg.model.super_link.decoders.gen.to_dict()
    if not dec_cfg.get('text_encoder'):
        raise ValueError(f'{args.config}: model.super_link.decoders.gen.text_encoder is not '
                         'set; the fixed condition is its embedding of the caption')
    torch.manual_seed(args.seed)
    dec = MODELS.build(dict(dec_cfg, llm_hidden_size=cfg.model.llm.config.hidden_size))
    ensure_one_shape_world(args.data_root)
    subsets = one_shape_subsets(args.data_root, args.work_dir)
    train = load_samples(cfg, args.data_root, subsets['captions_train']['path'])
    val = load_samples(cfg, args.data_root, subsets['captions_val']['path'])
    with torch.no_grad():
        train_cond = dec.text_encoder([s.caption for s in train])
        val_cond = dec.text_encoder([s.caption for s in val])
    params = list(dec.unet.parameters()) + [dec.conditioner.null]
    opt = torch.optim.AdamW(params, lr=args.lr or cfg.optim_wrapper.optimizer.lr)
    ema = None
    if args.ema_momentum:
        ema = ExponentialMovingAverage(dec.unet, momentum=args.ema_momentum)
    gen = torch.Generator().manual_seed(args.seed)
    start, it, losses = time.time(), 0, []
    bar = tqdm(desc='train (fixed condition)', unit='it')
    while time.time() - start < args.budget_min * 60:
        idx = torch.randint(0, len(train), (args.batch_size,), generator=gen)
        loss = dec.denoising_loss(train_cond[idx], [train[i] for i in idx.tolist()])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(dec.unet)
        it += 1
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f'{np.mean(losses[-50:]):.4f}')
    bar.close()
    train_min = (time.time() - start) / 60
    if ema is not None:
        dec.unet = ema.module
    dec.eval()
    chunk = 17
    by_scale = {}
    for scale in args.guidance_scales or [dec.test_cfg['guidance_scale']]:
        with torch.no_grad():
            images = torch.cat([dec.generate(val_cond[i:i + chunk], guidance_scale=scale)
                                for i in range(0, len(val), chunk)]).numpy()
        metric = METRICS.build(dict(type='ShapesGenerationMetric'))
        metric.process({}, [dict(task='gen', caption=s.caption, target_image=s.target_image,
                                 pred_image=img, sample_id=s.metainfo.get('sample_id'))
                            for s, img in zip(val, images)])
        by_scale[scale] = {k: float(v) for k, v in metric.evaluate(len(val)).items()}
        if len(by_scale) == 1:
            grid = make_grid(torch.from_numpy(images[:24]).permute(0, 3, 1, 2), nrow=6,
                             padding=0)
            Image.fromarray(grid.permute(1, 2, 0).numpy()).save(
                osp.join(args.work_dir, 'grid.png'))
    result = dict(command=' '.join(sys.argv), iterations=it, batch_size=args.batch_size,
                  ema_momentum=args.ema_momentum,
                  noise_repeats=dec.noise_repeats, train_minutes=train_min,
                  final_loss=float(np.mean(losses[-50:])), test_cfg=dec.test_cfg,
                  metrics=next(iter(by_scale.values())),
                  metrics_by_guidance_scale=by_scale if len(by_scale) > 1 else None)
    with open(osp.join(args.work_dir, 'fixed_condition.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
