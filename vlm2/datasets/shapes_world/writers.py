"""Records in the formats of real data sets: COCO instances and keypoints, RefCOCO
refs, LLaVA conversations, and JSON-lines caption/edit pairs.

Segmentation follows COCO practice: polygons for polygonal shapes nobody covers,
RLE (``counts`` as str) for circles and occluded instances. ``area`` and ``bbox`` are
those of the visible mask, computed by ``pycocotools`` from the written encoding.
"""
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from .keypoints import SKELETONS, keypoint_annotation
from .scene import Scene, polygon_segmentation
from .vocab import CATEGORY_IDS, KEYPOINT_NAMES, SHAPES, SUPERCATEGORY, tokenize

INFO = {'description': 'ShapesWorld: procedurally generated shapes for vlm2',
        'version': '1.0', 'contributor': 'vlm2'}


def coco_categories(with_keypoints: bool = False) -> list[dict]:
    """COCO ``categories`` (non-contiguous ids), optionally with keypoints/skeleton."""
    cats = []
    for kind in SHAPES:
        cat = {'id': CATEGORY_IDS[kind], 'name': kind, 'supercategory': SUPERCATEGORY}
        if with_keypoints:
            cat['keypoints'] = list(KEYPOINT_NAMES[kind])
            cat['skeleton'] = [list(link) for link in SKELETONS[kind]]
        cats.append(cat)
    return cats


def coco_file(images: list[dict], annotations: list[dict], with_keypoints: bool) -> dict:
    """A complete COCO annotation file."""
    return {'info': INFO, 'licenses': [], 'images': images,
            'annotations': annotations, 'categories': coco_categories(with_keypoints)}


def image_record(image_id: int, file_name: str, image_size: int) -> dict:
    """COCO ``images`` entry."""
    return {'id': image_id, 'file_name': file_name,
            'width': image_size, 'height': image_size}


def _rle_json(rle: dict) -> dict:
    """COCO's JSON form of an RLE: ``{"size": [h, w], "counts": str}``."""
    return {'size': [int(v) for v in rle['size']], 'counts': rle['counts'].decode('ascii')}


def instance_annotations(scene: Scene, image_id: int, first_ann_id: int
                         ) -> tuple[list[dict], list[dict]]:
    """COCO instance and keypoint annotations of every shape (same ids in both)."""
    instances, keypoints = [], []
    for i, (shape, visible) in enumerate(zip(scene.shapes, scene.visible_masks)):
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        if shape.kind == 'circle' or scene.occluded(i):
            segmentation = _rle_json(rle)
        else:
            segmentation = polygon_segmentation(shape)
        common = {
            'id': first_ann_id + i, 'image_id': image_id,
            'category_id': CATEGORY_IDS[shape.kind],
            'bbox': [float(v) for v in mask_utils.toBbox(rle)],
            'area': int(mask_utils.area(rle)), 'iscrowd': 0,
            'segmentation': segmentation}
        instances.append({**common, 'color': shape.color, 'size': shape.size,
                          'position': scene.position(i)})
        flat, num = keypoint_annotation(scene, i)
        keypoints.append({**common, 'keypoints': flat, 'num_keypoints': num})
    return instances, keypoints


def ref_record(ref_id: int, ann: dict, split: str, file_name: str,
               sentences: list[str], first_sent_id: int) -> dict:
    """One RefCOCO ``refs`` entry (the structure of refer's ``refs(unc).p``)."""
    sents = [{'sent': s, 'raw': s, 'tokens': tokenize(s), 'sent_id': first_sent_id + k}
             for k, s in enumerate(sentences)]
    return {'ref_id': ref_id, 'ann_id': ann['id'], 'image_id': ann['image_id'],
            'split': split, 'category_id': ann['category_id'], 'file_name': file_name,
            'sent_ids': [s['sent_id'] for s in sents], 'sentences': sents}


def llava_record(record_id: str, image: str, turns: list[tuple[str, str]],
                 **extra) -> dict:
    """One LLaVA conversation; "<image>\\n" opens the first human turn only."""
    conversations = []
    for k, (question, answer) in enumerate(turns):
        prefix = '<image>\n' if k == 0 else ''
        conversations += [{'from': 'human', 'value': prefix + question},
                          {'from': 'gpt', 'value': answer}]
    return {'id': record_id, 'image': image, 'conversations': conversations, **extra}


def write_json(path: Path, obj, indent: int | None = None) -> None:
    """Deterministic JSON (compact unless ``indent`` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=indent)


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
