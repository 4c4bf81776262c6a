"""Do the super-link phrase states carry their phrase? A probe of a config (and checkpoint).

A decoder can only tell "circle" from "square" if the last hidden states of the queries after
``circle[DET]`` differ from those after ``square[DET]`` whatever the phrase's place in the
answer. This script runs a data set of the config through the model (teacher-forced, the
routing the benchmarks use), takes each phrase's query states averaged over its queries, and
reports how much of their variance the phrase text explains (R2), how often the nearest
phrase centroid is the right one, and a held-out linear probe's accuracy. Training prompts
shuffle the phrases, so run it on the ``train`` split: on fixed validation prompts a state
that only encodes the phrase's slot scores as well as one that encodes its words.

    .venv/bin/python benchmarks/phrase_probe.py \\
        vlm2/plugins/grounding_dino/configs/visionllmv2_tiny_shapes_det.py \\
        --checkpoint work_dirs/x/iter_1000.pth --task det --data-root /tmp/sw

A phrase without words of its own (``[GEN]``, whose queries must carry the whole caption) is
grouped by attributes of a sample field instead, one regular expression each, and
``--module`` probes what a decoder part makes of the states as well:

    .venv/bin/python benchmarks/phrase_probe.py \\
        vlm2/plugins/diffusion/configs/visionllmv2_tiny_shapes_gen.py --task gen \\
        --by 'colour=caption:red|green|blue|yellow|purple|orange' \\
        --by 'kind=caption:circle|square|triangle|star|hexagon' \\
        --module super_link.decoders.gen.conditioner --data-root /tmp/sw
"""
import argparse
import json
import re
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


def linear_probe_acc(x: torch.Tensor, index: torch.Tensor, num_classes: int) -> float:
    """Held-out accuracy of a logistic regression of ``index`` on ``x`` (P, C): fitted on
    the even rows, scored on the odd ones. Unlike the nearest centroid it finds a class that
    is a small direction beside larger variation (the kind word's state next to its colour's),
    which a learnt layer can still read."""
    fit, score = slice(0, None, 2), slice(1, None, 2)
    x = (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[fit] @ w + b, index[fit])
        loss = loss + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(((x[score] @ w + b).argmax(1) == index[score]).float().mean())


def probe(states: torch.Tensor, names: list[str]) -> dict:
    """R2 of ``states`` (P, C) explained by ``names``, nearest-centroid accuracy, and a
    held-out linear probe's accuracy."""
    classes = sorted(set(names))
    index = torch.tensor([classes.index(n) for n in names])
    x = states - states.mean(0)
    centroids = torch.stack([x[index == c].mean(0) for c in range(len(classes))])
    between = (centroids[index] ** 2).sum()
    nearest = torch.cdist(x, centroids).argmin(1)
    return dict(phrases=len(names), classes=len(classes),
                r2=float(between / (x ** 2).sum().clamp(min=1e-12)),
                nearest_centroid_acc=float((nearest == index).float().mean()),
                linear_probe_acc=linear_probe_acc(x.detach(), index, len(classes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', default=None, help='none: the initialised model')
    parser.add_argument('--task', default='det', help='the data set of the mix to read')
    parser.add_argument('--split', choices=['train', 'val'], default='train')
    parser.add_argument('--data-root', default=None, help='replaces the config\'s data root')
    parser.add_argument('--num', type=int, default=128, help='samples to read')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--by', action='append', default=[], metavar='NAME=FIELD:REGEX',
                        help='group phrases by the REGEX match in the sample\'s FIELD '
                             '(`phrase`: the phrase text itself) instead of by the whole '
                             'phrase text (repeatable)')
    parser.add_argument('--module', default=None,
                        help='a submodule (dotted path) applied to each phrase\'s (1, N, C) '
                             'states; its flattened output is probed too')
    args = parser.parse_args()
    groupings = {}
    for spec in args.by:
        name, _, rest = spec.partition('=')
        field, _, pattern = rest.partition(':')
        if not (name and field and pattern):
            raise SystemExit(f'--by {spec!r}: expected NAME=FIELD:REGEX')
        groupings[name] = (field, re.compile(pattern))

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
    module = model.get_submodule(args.module) if args.module else None
    # (token, kind) -> [(probed vector, phrase name, sample)]
    records: dict[tuple[str, str], list] = defaultdict(list)
    batch_samples: list = []

    def recording_route(found, names=None):
        for b, (phrases, phrase_names) in enumerate(zip(found, names or [])):
            for (token, states, _), name in zip(phrases, phrase_names):
                sample = batch_samples[b]
                records[token, 'states'].append((states.float().mean(0), name, sample))
                if module is not None:
                    out = module(states[None]).float().flatten()
                    records[token, args.module].append((out, name, sample))
        return {}  # the probe stops at the states: no decoder runs

    model.super_link.route = recording_route
    model.super_link.predict = lambda routed, data_samples: None
    num = min(args.num, len(dataset))
    with torch.no_grad():
        for start in tqdm(range(0, num, args.batch_size), desc='probe'):
            batch = [dataset[i] for i in range(start, min(num, start + args.batch_size))]
            data = model.data_preprocessor(pseudo_collate(batch), False)
            batch_samples[:] = data['data_samples']
            model.predict(**data)
    result = {}
    for (token, kind), rows in records.items():
        vectors = torch.stack([v for v, _, _ in rows])
        out = result.setdefault(token, {})
        if not groupings:
            out[kind] = probe(vectors, [n for _, n, _ in rows])
        for name, (field, pattern) in groupings.items():
            labels = [pattern.search(n if field == 'phrase' else str(s.get(field, '')))
                      for _, n, s in rows]
            keep = [i for i, m in enumerate(labels) if m]
            if len(keep) < len(rows):
                print(f'--by {name}: {len(rows) - len(keep)} of {len(rows)} phrases have no '
                      f'match in {field!r} and are left out')
            out[f'{kind} by {name}'] = probe(vectors[keep], [labels[i][0] for i in keep])
    print(json.dumps(dict(config=args.config, checkpoint=args.checkpoint, task=args.task,
                          split=args.split, by_routing_token=result), indent=1))


if __name__ == '__main__':
    main()
