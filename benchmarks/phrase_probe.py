"""Do the super-link phrase states carry their phrase? A probe of a config (and checkpoint).

A decoder can only tell "circle" from "square" if the last hidden states of the queries after
``circle[DET]`` differ from those after ``square[DET]`` whatever the phrase's place in the
answer. This script runs a data set of the config through the model (teacher-forced, the
routing the benchmarks use), takes each phrase's query states averaged over its queries, and
reports how much of their variance the phrase text explains (R2) and how often the nearest
phrase centroid is the right one. Training prompts shuffle the phrases, so run it on the
``train`` split: on fixed validation prompts a state that only encodes the phrase's slot
scores as well as one that encodes its words.

    .venv/bin/python benchmarks/phrase_probe.py \\
        vlm2/plugins/grounding_dino/configs/visionllmv2_tiny_shapes_det.py \\
        --checkpoint work_dirs/x/iter_1000.pth --task det --data-root /tmp/sw
"""
import argparse
import json
from collections import defaultdict

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint, set_random_seed
from mmengine.utils import import_modules_from_strings
from tqdm import tqdm

from vlm2.registry import DATASETS, MODELS
from vlm2.utils import reroot


def probe(states: torch.Tensor, names: list[str]) -> dict:
    """R2 of ``states`` (P, C) explained by ``names``, and nearest-centroid accuracy."""
    classes = sorted(set(names))
    index = torch.tensor([classes.index(n) for n in names])
    x = states - states.mean(0)
    centroids = torch.stack([x[index == c].mean(0) for c in range(len(classes))])
    between = (centroids[index] ** 2).sum()
    nearest = torch.cdist(x, centroids).argmin(1)
    return dict(phrases=len(names), classes=len(classes),
                r2=float(between / (x ** 2).sum().clamp(min=1e-12)),
                nearest_centroid_acc=float((nearest == index).float().mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', default=None, help='none: the initialised model')
    parser.add_argument('--task', default='det', help='the data set of the mix to read')
    parser.add_argument('--split', choices=['train', 'val'], default='train')
    parser.add_argument('--data-root', default=None, help='replaces the config\'s data root')
    parser.add_argument('--num', type=int, default=128, help='samples to read')
    parser.add_argument('--batch-size', type=int, default=16)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'vlm2'))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    loader = cfg.train_dataloader if args.split == 'train' else cfg.val_dataloader
    sources = [d for d in loader.dataset.datasets if d.get('task') == args.task]
    if not sources:
        raise SystemExit(f'{args.config}: no {args.split} data set with task={args.task!r}; '
                         f'tasks: {[d.get("task") for d in loader.dataset.datasets]}')
    source = sources[0]
    if args.data_root:
        source = reroot(source, args.data_root, old=cfg.data_root)
    set_random_seed(0)  # the prompts' shuffles and the initialisation repeat run to run
    dataset = DATASETS.build(source)
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    model.test_cfg['routing'] = 'forced'
    by_token: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    route = model.super_link.route

    def recording_route(found, names=None):
        for phrases, phrase_names in zip(found, names or []):
            for (token, states, _), name in zip(phrases, phrase_names):
                by_token[token][0].append(states.float().mean(0))
                by_token[token][1].append(name)
        return route(found, names)

    model.super_link.route = recording_route
    num = min(args.num, len(dataset))
    with torch.no_grad():
        for start in tqdm(range(0, num, args.batch_size), desc='probe'):
            batch = [dataset[i] for i in range(start, min(num, start + args.batch_size))]
            model.predict(**model.data_preprocessor(pseudo_collate(batch), False))
    result = {token: probe(torch.stack(states), names)
              for token, (states, names) in by_token.items()}
    print(json.dumps(dict(config=args.config, checkpoint=args.checkpoint, task=args.task,
                          split=args.split, by_routing_token=result), indent=1))


if __name__ == '__main__':
    main()
