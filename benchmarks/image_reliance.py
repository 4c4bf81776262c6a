"""Does the model look at the image? Answers with each sample's own image and with another's.

VQA accuracy alone cannot tell a model that reads the image badly from one that does not read
it at all: both can sit near the majority baseline. This script reads the val split of a
config's VQA data set teacher-forced (one forward pass per batch, no generation) and scores,
per question type, whether every token of the answer is the model's top prediction: once with
each sample's own image and once with the image of another sample of the batch (a different
picture). A model that ignores the image scores the same on both; the gap is what the image
is worth to it.

    .venv/bin/python benchmarks/image_reliance.py configs/visionllmv2/visionllmv2_tiny_shapes.py \\
        --checkpoint work_dirs/visionllmv2_tiny_shapes/iter_1500.pth

Prints one JSON line: per question type, the samples, the accuracy with the own image and
with another's, and their difference.
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
from torch import Tensor
from tqdm import tqdm

from vlm2.registry import DATASETS, MODELS
from vlm2.utils import reroot


def other_images(pixel_values: Tensor, num_tiles: list[int], img_paths: list[str]) -> Tensor:
    """``pixel_values`` with each sample's tiles replaced by those of the next sample (in batch
    order, cyclically) that has a different image with as many tiles.

    Raises ``ValueError`` naming the image when a sample has no such partner in the batch.
    """
    starts = [sum(num_tiles[:i]) for i in range(len(num_tiles))]
    blocks = []
    for i, n in enumerate(num_tiles):
        order = [(i + k) % len(num_tiles) for k in range(1, len(num_tiles))]
        j = next((j for j in order if num_tiles[j] == n and img_paths[j] != img_paths[i]), None)
        if j is None:
            raise ValueError(f'{img_paths[i]}: no other image with {n} tile(s) in the batch to '
                             'swap in; use a larger --batch-size')
        blocks.append(pixel_values[starts[j]:starts[j] + n])
    return torch.cat(blocks)


def answer_hits(model, inputs: dict, data_samples: list) -> list[bool]:
    """Per sample: is every supervised (answer) token the model's top prediction?"""
    batch, embeds = model.embed(inputs, data_samples, for_generation=False)
    hidden = model._hidden(embeds, batch['attention_mask'])
    logits = model._lm().get_output_embeddings()(hidden[:, :-1])
    labels = batch['labels'][:, 1:]
    supervised = labels != -100
    right = (logits.argmax(-1) == labels) | ~supervised
    return right.all(1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', default=None, help='none: the initialised model')
    parser.add_argument('--task', default='vqa', help='the data set of the val mix to read')
    parser.add_argument('--data-root', default=None, help='replaces the config\'s data root')
    parser.add_argument('--num', type=int, default=None, help='samples to read (default all)')
    parser.add_argument('--batch-size', type=int, default=32)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'vlm2'))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    sources = [d for d in cfg.val_dataloader.dataset.datasets if d.get('task') == args.task]
    if not sources:
        raise SystemExit(f'{args.config}: no val data set with task={args.task!r}')
    source = sources[0]
    if args.data_root:
        source = reroot(source, args.data_root, old=cfg.data_root)
    set_random_seed(0)
    dataset = DATASETS.build(source)
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: dict(own=[], other=[]))
    num = min(args.num or len(dataset), len(dataset))
    with torch.no_grad():
        for start in tqdm(range(0, num, args.batch_size), desc='image reliance'):
            batch = [dataset[i] for i in range(start, min(num, start + args.batch_size))]
            data = model.data_preprocessor(pseudo_collate(batch), False)
            inputs, samples = data['inputs'], data['data_samples']
            swapped = dict(inputs, pixel_values=other_images(
                inputs['pixel_values'], inputs['num_tiles'], [s.img_path for s in samples]))
            for key, inp in (('own', inputs), ('other', swapped)):
                for sample, hit in zip(samples, answer_hits(model, inp, samples)):
                    hits[sample.get('question_type', 'all')][key].append(hit)
    result = {}
    for qtype in sorted(hits):
        own, other = (sum(hits[qtype][k]) / len(hits[qtype][k]) for k in ('own', 'other'))
        result[qtype] = dict(n=len(hits[qtype]['own']), own_image=round(own, 4),
                             other_image=round(other, 4), gap=round(own - other, 4))
    print(json.dumps(dict(config=args.config, checkpoint=args.checkpoint, by_type=result)))


if __name__ == '__main__':
    main()
