"""Can the tiny vision tower learn shape from scratch, and how does the readout matter?

Trains the tiny recipe's ``VisionTower`` (built from its config, pixel shuffle included) with
a linear head on "which of the 5 ShapesWorld shapes are present" (multi-label), reading the
tower's tokens either by mean pooling (what an LLM whose attention is still uniform sees) or
by max pooling (a readout that can pick out one object). Prints the held-out label accuracy
every 100 steps and the majority baseline. A diagnostic of why the demo learns colour long
before shape, not a target.

    .venv/bin/python benchmarks/tower_shape_probe.py --pool mean --steps 300
"""
import argparse
import json
import os.path as osp
import time

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from PIL import Image

from vlm2.models.data_preprocessor import CLIP_MEAN, CLIP_STD
from vlm2.registry import MODELS

CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'visionllmv2',
                  'visionllmv2_tiny_shapes.py')


def load_split(root: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) normalised as the model does, and shape-presence labels (N, 5)."""
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        coco = json.load(f)
    cats = sorted(c['id'] for c in coco['categories'])
    labels = {im['id']: np.zeros(len(cats), np.float32) for im in coco['images']}
    for a in coco['annotations']:
        labels[a['image_id']][cats.index(a['category_id'])] = 1
    ids = sorted(labels)
    files = {im['id']: im['file_name'] for im in coco['images']}
    x = torch.tensor(np.stack([np.asarray(Image.open(osp.join(
        root, 'images', split, files[i])).convert('RGB')) for i in ids]))
    x = (x.permute(0, 3, 1, 2).float() - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return x, torch.tensor(np.stack([labels[i] for i in ids]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world')
    parser.add_argument('--pool', choices=['mean', 'max'], default='mean')
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override keys of the recipe, e.g. '
                             'model.vision_tower.config.patch_size=4')
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    init_default_scope('vlm2')
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(args.cfg_options)
    tower = MODELS.build(cfg.model.vision_tower)
    xtr, ytr = load_split(args.data_root, 'train')
    xva, yva = load_split(args.data_root, 'val')
    head = torch.nn.Linear(tower.out_channels, ytr.shape[1])
    params = [p for p in list(tower.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)

    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast('cpu', dtype=torch.bfloat16):  # as the recipe trains
            feats = tower(x)
            pooled = feats.amax(1) if args.pool == 'max' else feats.mean(1)
            return head(pooled).float()

    start = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(xtr), (args.batch_size,))
        loss = F.binary_cross_entropy_with_logits(logits(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                pred = torch.cat([logits(xva[i:i + 100]) for i in range(0, len(xva), 100)]) > 0
            acc = (pred == (yva > 0)).float().mean().item()
            print(json.dumps(dict(step=step, pool=args.pool, train_loss=round(loss.item(), 3),
                                  val_label_accuracy=round(acc, 3),
                                  seconds=round(time.time() - start))), flush=True)
    majority = ((yva.mean(0) > 0.5).float() == yva).float().mean().item()
    print(json.dumps(dict(majority_label_accuracy=round(majority, 3))))


if __name__ == '__main__':
    main()
