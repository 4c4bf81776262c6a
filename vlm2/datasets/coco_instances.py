"""Reading a COCO instances file, checked, for the adapters that need instances."""
import json
from collections import defaultdict


def load_coco_instances(path: str) -> tuple[dict, dict, dict]:
    """(images by id, annotations by image id, category names by id) of a COCO file;
    an annotation of an unknown image is an error naming it."""
    try:
        with open(path) as f:
            coco = json.load(f)
        images = {im['id']: im for im in coco['images']}
        cats = {c['id']: c['name'] for c in coco['categories']}
        anns = defaultdict(list)
        for ann in coco['annotations']:
            if ann['image_id'] not in images:
                raise ValueError(f'{path}: annotation {ann["id"]} refers to unknown image id '
                                 f'{ann["image_id"]}')
            if ann['category_id'] not in cats:
                raise ValueError(f'{path}: annotation {ann["id"]} has unknown category id '
                                 f'{ann["category_id"]}')
            anns[ann['image_id']].append(ann)
    except FileNotFoundError as e:
        raise FileNotFoundError(f'COCO annotation file not found: {path}') from e
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f'{path}: not a COCO instances file ({e!r})') from e
    return images, anns, cats
