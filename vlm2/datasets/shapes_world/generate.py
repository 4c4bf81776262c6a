"""``generate_shapes_world``: write the whole ShapesWorld data set to a folder.

Layout under ``out_dir``::

    images/{split}/000000.png             the scenes
    images/edits/{split}/000000_{src,tgt}.png
    annotations/instances_{split}.json    COCO instances (+ color/size/position)
    annotations/keypoints_{split}.json    COCO keypoints, per-kind keypoint names
    annotations/refs_{split}.json         RefCOCO refs (JSON list)
    annotations/llava_{split}.json        LLaVA conversations (val: one QA per record)
    annotations/captions_{split}.jsonl    text-to-image pairs
    annotations/edits_{split}.jsonl       instruction-editing triplets
    meta.json                             arguments, vocabulary and counts

Each image draws from its own random stream seeded by (seed, split, index), so the
output is byte-identical for a seed and the first images do not depend on the count.
"""
import time
from pathlib import Path

import numpy as np
from mmengine.logging import print_log
from PIL import Image
from tqdm import tqdm

from .edits import sample_edit
from .language import caption, conversation, evaluation_questions, referring_expressions
from .scene import MIN_VISIBLE, sample_scene
from .vocab import CATEGORY_IDS, COLORS, KEYPOINT_NAMES, MAX_SHAPES, POSITIONS, SHAPES, SIZES
from .writers import (coco_file, image_record, instance_annotations, llava_record,
                      ref_record, write_json, write_jsonl)

SPLITS: tuple[str, ...] = ('train', 'val')
MIN_IMAGE_SIZE = 32


def _save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, format='PNG')


def _generate_split(out: Path, split: str, num: int, seed: int,
                    image_size: int, max_shapes: int) -> tuple[dict, dict]:
    """Write one split; returns (records per file, skipped counts)."""
    image_dir, edit_dir = out / 'images' / split, out / 'images' / 'edits' / split
    image_dir.mkdir(parents=True, exist_ok=True)
    edit_dir.mkdir(parents=True, exist_ok=True)
    images, instances, keypoints, refs, llava, captions, edits = [], [], [], [], [], [], []
    skipped = {'refs': 0, 'edits': 0}
    sent_id = 0
    for idx in tqdm(range(num), desc=f'ShapesWorld {split}', unit='img'):
        streams = np.random.SeedSequence([seed, SPLITS.index(split), idx]).spawn(4)
        scene_rng, ref_rng, qa_rng, edit_rng = (np.random.default_rng(s) for s in streams)
        scene = sample_scene(scene_rng, image_size, max_shapes)
        name, image_id = f'{idx:06d}.png', idx + 1
        rel_image = f'{split}/{name}'
        picture = scene.render()
        _save_png(picture, image_dir / name)
        images.append(image_record(image_id, name, image_size))

        anns, kpts = instance_annotations(scene, image_id, len(instances) + 1)
        instances += anns
        keypoints += kpts

        for i, ann in enumerate(anns):
            exprs = referring_expressions(scene, i)
            if not exprs:
                skipped['refs'] += 1
                continue
            sentences = exprs[:1]
            if len(exprs) > 1:
                sentences.append(exprs[1 + int(ref_rng.integers(len(exprs) - 1))])
            refs.append(ref_record(len(refs), ann, split, name, sentences, sent_id))
            sent_id += len(sentences)

        text = caption(scene)
        captions.append({'image': rel_image, 'caption': text})
        if split == 'train':
            turns = [(q, a) for _, q, a in conversation(scene, qa_rng)]
            llava.append(llava_record(f'{idx:06d}', rel_image, turns))
        else:
            for family, q, a in evaluation_questions(scene, qa_rng):
                llava.append(llava_record(f'{idx:06d}_{family}', rel_image, [(q, a)],
                                          question_type=family, answers=[a]))

        edit = sample_edit(scene, edit_rng)
        if edit is None:
            skipped['edits'] += 1
        else:
            src, tgt = f'edits/{split}/{idx:06d}_src.png', f'edits/{split}/{idx:06d}_tgt.png'
            _save_png(picture, out / 'images' / src)
            _save_png(edit.target.render(), out / 'images' / tgt)
            edits.append({'source': src, 'instruction': edit.instruction, 'target': tgt,
                          'edit_type': edit.edit_type})

    ann_dir = out / 'annotations'
    files = {
        f'instances_{split}.json': (coco_file(images, instances, False), len(instances)),
        f'keypoints_{split}.json': (coco_file(images, keypoints, True), len(keypoints)),
        f'refs_{split}.json': (refs, len(refs)),
        f'llava_{split}.json': (llava, len(llava)),
    }
    for fname, (obj, _) in files.items():
        write_json(ann_dir / fname, obj)
    write_jsonl(ann_dir / f'captions_{split}.jsonl', captions)
    write_jsonl(ann_dir / f'edits_{split}.jsonl', edits)
    counts = {fname: n for fname, (_, n) in files.items()}
    counts[f'captions_{split}.jsonl'] = len(captions)
    counts[f'edits_{split}.jsonl'] = len(edits)
    return counts, skipped


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')


def generate_shapes_world(out_dir: str, seed: int = 0, num_train: int = 2000,
                          num_val: int = 200, image_size: int = 128,
                          max_shapes: int = MAX_SHAPES) -> dict:
    """Generate ShapesWorld into ``out_dir`` and return the meta dict (also meta.json).

    Args:
        out_dir: destination folder (created; existing files are overwritten).
        seed: non-negative integer; the same seed gives byte-identical files.
        num_train, num_val: number of images per split (>= 1).
        image_size: side of the square images in pixels (>= 32).
        max_shapes: most shapes per image, 1 to ``MAX_SHAPES`` (e.g. 1 for the generation
            benchmark's one-shape pictures).
    """
    _check_int('seed', seed, 0)
    _check_int('num_train', num_train, 1)
    _check_int('num_val', num_val, 1)
    _check_int('image_size', image_size, MIN_IMAGE_SIZE)
    _check_int('max_shapes', max_shapes, 1)
    if max_shapes > MAX_SHAPES:
        raise ValueError(f'max_shapes must be at most {MAX_SHAPES}, got {max_shapes}')
    out = Path(out_dir)
    start = time.perf_counter()
    counts: dict[str, int] = {}
    skipped_refs, skipped_edits = {}, {}
    for split, num in zip(SPLITS, (num_train, num_val)):
        split_counts, skipped = _generate_split(out, split, num, int(seed), image_size,
                                               int(max_shapes))
        counts.update(split_counts)
        skipped_refs[split], skipped_edits[split] = skipped['refs'], skipped['edits']
    meta = {
        'name': 'shapes_world', 'seed': int(seed), 'image_size': image_size,
        'num_train': num_train, 'num_val': num_val, 'max_shapes': int(max_shapes),
        'shapes': list(SHAPES), 'category_ids': CATEGORY_IDS,
        'colors': {k: list(v) for k, v in COLORS.items()}, 'sizes': list(SIZES),
        'positions': list(POSITIONS), 'keypoints': {k: list(v) for k, v in KEYPOINT_NAMES.items()},
        'min_visible_fraction': MIN_VISIBLE,
        'counts': counts, 'skipped_refs': skipped_refs, 'skipped_edits': skipped_edits,
    }
    write_json(out / 'meta.json', meta, indent=2)
    print_log(
        f'ShapesWorld: {num_train} train + {num_val} val images of {image_size}px, '
        f'{counts["instances_train.json"] + counts["instances_val.json"]} instances, '
        f'{counts["refs_train.json"] + counts["refs_val.json"]} refs '
        f'({sum(skipped_refs.values())} shapes without an unambiguous expression), '
        f'{counts["edits_train.jsonl"] + counts["edits_val.jsonl"]} edits -> {out} '
        f'in {time.perf_counter() - start:.1f}s', logger='current')
    return meta
