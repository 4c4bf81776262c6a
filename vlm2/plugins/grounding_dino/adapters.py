"""Dataset adapters of the perception decoder: COCO instances, RefCOCO (refer), interactive
segmentation (COCO-interactive style), CrowdHuman.

Each sample's targets are mmdet-style ``instances`` (``bbox`` xyxy, ``bbox_label``, ``mask``,
``ignore_flag``), read by ``mmdet.LoadAnnotations``; the prompt is written in the pipeline
(:class:`PhraseSlots`, :class:`ReferringPrompt`), because the class order is random in
training and the labels are the slots of that order. ShapesWorld is read through the same
adapters.
"""
import json
import logging
import os.path as osp
import pickle
from collections import defaultdict
from numbers import Number

from mmengine.fileio import get, get_text
from mmengine.logging import print_log

from vlm2.datasets import VLMBaseDataset
from vlm2.registry import DATASETS


def load_coco(path: str) -> dict:
    try:
        return json.loads(get_text(path))
    except FileNotFoundError as e:
        raise FileNotFoundError(f'COCO annotation file not found: {path}') from e
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e})') from e


def check_segmentation(segm, ann_file: str, ann_id, height: int, width: int):
    """Polygons (lists of >= 3 x,y pairs) or RLE (``size`` + ``counts``); anything else is a
    corrupt annotation and raises an error naming it."""
    where = f'{ann_file}: annotation id={ann_id}'
    if isinstance(segm, list):
        if not segm or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                               and all(isinstance(v, Number) for v in p) for p in segm):
            raise ValueError(f'{where} has a corrupt polygon segmentation (expected lists of '
                             'at least 3 x,y pairs)')
        return segm
    if isinstance(segm, dict):
        size, counts = segm.get('size'), segm.get('counts')
        if not (isinstance(size, list) and len(size) == 2 and isinstance(counts, (str, list))):
            raise ValueError(f'{where} has a corrupt RLE segmentation (needs "size" [h, w] and '
                             '"counts")')
        if list(size) != [height, width]:
            raise ValueError(f'{where}: RLE size {size} is not the image size '
                             f'{[height, width]}')
        if isinstance(counts, list) and sum(counts) != height * width:
            raise ValueError(f'{where} has a corrupt uncompressed RLE (counts sum to '
                             f'{sum(counts)}, not {height * width})')
        return segm
    raise ValueError(f'{where} has a corrupt segmentation of type {type(segm).__name__}')


class CocoIndex:
    """A COCO instances file, checked: images by id, annotations per image as mmdet
    ``instances``, contiguous labels for the (possibly non-contiguous) category ids.

    Boxes partly outside the image are clipped; boxes with no area after clipping are dropped
    and counted (``num_degenerate``), and the count is logged.
    """

    def __init__(self, ann_file: str, with_mask: bool = True) -> None:
        data = load_coco(ann_file)
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(data.get(key), list):
                raise ValueError(f'{ann_file}: not a COCO instances file (no "{key}" list)')
        self.ann_file = ann_file
        cats = sorted(data['categories'], key=lambda c: c['id'])
        self.cat_ids = [c['id'] for c in cats]
        self.classes = tuple(c['name'] for c in cats)
        self.label_of = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.images = {img['id']: img for img in data['images']}
        self.anns = {}
        self.instances = defaultdict(list)
        self.num_degenerate = 0
        for ann in data['annotations']:
            self.anns[ann.get('id')] = ann
            inst = self.instance(ann, with_mask)
            if inst is not None:
                self.instances[ann['image_id']].append(inst)
        if self.num_degenerate:
            print_log(f'{ann_file}: dropped {self.num_degenerate} degenerate boxes (no area '
                      'inside the image)', 'current')

    def instance(self, ann: dict, with_mask: bool):
        """The mmdet instance of one annotation, or None for a degenerate box."""
        where = f'{self.ann_file}: annotation id={ann.get("id")}'
        img = self.images.get(ann.get('image_id'))
        if img is None:
            raise ValueError(f'{where} refers to unknown image id {ann.get("image_id")!r}')
        if ann.get('category_id') not in self.label_of:
            raise ValueError(f'{where} has unknown category id {ann.get("category_id")!r}')
        bbox = ann.get('bbox')
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise ValueError(f'{where} has no [x, y, w, h] bbox')
        x, y, w, h = bbox
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(img['width']), x + w), min(float(img['height']), y + h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            self.num_degenerate += 1
            return None
        inst = dict(bbox=[x1, y1, x2, y2], bbox_label=self.label_of[ann['category_id']],
                    ignore_flag=int(bool(ann.get('iscrowd', 0))), ann_id=ann.get('id'))
        if with_mask:
            inst['mask'] = check_segmentation(ann.get('segmentation'), self.ann_file,
                                              ann.get('id'), img['height'], img['width'])
        return inst


@DATASETS.register_module()
class CocoInstancesDataset(VLMBaseDataset):
    """COCO-style instances (detection, instance segmentation), one sample per image.

    Images with no annotations are kept (every prompted class is then a negative). Handles
    polygons and RLE, ``iscrowd`` (ignored regions), non-contiguous category ids, clipping.

    Args:
        with_mask: read segmentations (instance segmentation).
        task: the task family (``'det'``, ``'seg'``).
    """

    def __init__(self, *args, with_mask: bool = True, task: str = 'det', **kwargs) -> None:
        self.with_mask = with_mask
        super().__init__(*args, task=task, **kwargs)

    def load_data_list(self) -> list[dict]:
        index = CocoIndex(self.ann_file, self.with_mask)
        self._metainfo['classes'] = index.classes
        self._metainfo['cat_ids'] = index.cat_ids
        self.num_degenerate = index.num_degenerate
        return [dict(sample_id=str(img_id), img_id=img_id,
                     img_path=self.image_path(img['file_name']),
                     height=img['height'], width=img['width'], classes=index.classes,
                     instances=index.instances.get(img_id, []))
                for img_id, img in index.images.items()]


@DATASETS.register_module()
class RefCocoDataset(VLMBaseDataset):
    """RefCOCO / RefCOCO+ / RefCOCOg in the refer toolkit's layout: ``refs(unc).p`` (a
    pickled list; a JSON list is read too, as ShapesWorld writes it) plus the COCO
    ``instances.json`` holding the referred annotations.

    One sample per (ref, sentence) (evaluation); REC (``[GRD]``, task ``'rec'``) targets the
    box, RES (``[SEG]``, task ``'res'``) the mask. Writes ``phrase`` and one instance with
    label 0, plus ``gt_bbox`` (xyxy) and ``gt_segm`` (the COCO segmentation) in original
    pixels.

    ``per_image=True`` (training) gives one sample per image whose phrase slots are its
    referred objects: ``phrase`` is a list holding each object's sentences (the prompt
    transform picks one), and object ``i`` has label ``i``. The decoder then has to tell the
    expressions of one image apart, as detection makes it tell the classes apart; with one
    expression per prompt its contrastive classification never compares two.

    Args:
        ann_file: the refs file.
        instances_file: the COCO instances file.
        split: keep refs of this split (None: all).
        per_image: one sample per image, every referred object a slot.
    """

    def __init__(self, *args, instances_file: str, split=None, task: str = 'rec',
                 per_image: bool = False, **kwargs) -> None:
        self.instances_file = instances_file
        self.split = split
        self.per_image = per_image
        super().__init__(*args, task=task, **kwargs)

    def _refs(self) -> list:
        if self.ann_file.endswith('.json'):
            return load_coco(self.ann_file)
        try:
            return pickle.loads(get(self.ann_file))
        except FileNotFoundError as e:
            raise FileNotFoundError(f'refs file not found: {self.ann_file}') from e

    def load_data_list(self) -> list[dict]:
        inst_file = self.instances_file
        if self.data_root and not osp.isabs(inst_file):
            inst_file = osp.join(self.data_root, inst_file)
        index = CocoIndex(inst_file, with_mask=True)
        infos, by_image, slot_of = [], {}, {}  # slot_of: annotation id -> its image's slot
        for ref in self._refs():
            if self.split is not None and ref.get('split') != self.split:
                continue
            ann = index.anns.get(ref.get('ann_id'))
            if ann is None:
                raise ValueError(f'{self.ann_file}: ref id={ref.get("ref_id")} refers to '
                                 f'annotation id={ref.get("ann_id")!r}, not in {inst_file}')
            inst = index.instance(ann, with_mask=True)
            if inst is None:
                continue
            img = index.images[ann['image_id']]
            sents = [sent['sent'].strip() for sent in ref.get('sentences', [])]
            if self.per_image:
                if not sents:
                    continue
                info = by_image.setdefault(img['id'], dict(
                    sample_id=str(img['id']), img_id=img['id'],
                    img_path=self.image_path(img['file_name']), height=img['height'],
                    width=img['width'], phrase=[], instances=[]))
                if ann['id'] in slot_of:  # another ref of the same object
                    info['phrase'][slot_of[ann['id']]] += sents
                    continue
                slot_of[ann['id']] = len(info['phrase'])
                info['instances'].append(dict(inst, bbox_label=len(info['phrase'])))
                info['phrase'].append(sents)
                continue
            for k, sent in enumerate(ref.get('sentences', [])):
                infos.append(dict(
                    sample_id=f'{ref["ref_id"]}_{sent.get("sent_id", k)}', img_id=img['id'],
                    img_path=self.image_path(img['file_name']), height=img['height'],
                    width=img['width'], phrase=sent['sent'].strip(), ref_id=ref['ref_id'],
                    instances=[dict(inst, bbox_label=0)], gt_bbox=inst['bbox'],
                    gt_segm=inst['mask']))
        return infos + list(by_image.values())


@DATASETS.register_module()
class InteractiveSegDataset(VLMBaseDataset):
    """Interactive segmentation, COCO-interactive style: COCO instances (crowd regions
    skipped), each with a visual prompt drawn from its mask by ``VisualPromptMasks`` (point,
    scribble, box, mask, ...).

    One sample per instance (evaluation): the prompt reads ``Please segment
    <reg>region1<region></reg>.`` and the answer ``region1[SEG]``; the region's phrase
    embedding drives the decoder's mask. Writes ``phrase`` (the question's region reference),
    ``answer_phrase`` (``region1``), ``regions``, one instance with label 0, ``gt_bbox`` and
    ``gt_segm``, as RES does.

    ``per_image=True`` (training, as the paper's released code does) gives one sample per
    image with all its instances as regions ``region1 ... regionR``, each its own phrase slot
    (label ``i``). The decoder's contrastive classification then has to tell the regions
    apart, which a single phrase per prompt never asks of it. Instances beyond
    ``max_regions`` are left out, counted in ``num_regions_left_out`` and logged.
    """

    def __init__(self, *args, task: str = 'interactive', per_image: bool = False,
                 max_regions: int = 20, **kwargs) -> None:
        self.per_image = per_image
        self.max_regions = max_regions
        self.num_regions_left_out = 0
        super().__init__(*args, task=task, **kwargs)

    @staticmethod
    def region(i: int) -> str:
        return f'<reg>region{i}<region></reg>'

    def load_data_list(self) -> list[dict]:
        index = CocoIndex(self.ann_file, with_mask=True)
        self.num_degenerate = index.num_degenerate
        infos = []
        for img_id, img in index.images.items():
            insts = [i for i in index.instances.get(img_id, []) if not i['ignore_flag']]
            if self.per_image:
                groups = [insts[:self.max_regions]] if insts else []
                self.num_regions_left_out += max(0, len(insts) - self.max_regions)
            else:
                groups = [[inst] for inst in insts]
            for group in groups:
                ids = range(1, len(group) + 1)
                regions = [dict(id=inst['ann_id'], segmentation=inst['mask'],
                                bbox=[inst['bbox'][0], inst['bbox'][1],
                                      inst['bbox'][2] - inst['bbox'][0],
                                      inst['bbox'][3] - inst['bbox'][1]]) for inst in group]
                info = dict(
                    img_id=img_id, img_path=self.image_path(img['file_name']),
                    height=img['height'], width=img['width'], regions=regions,
                    instances=[dict(inst, bbox_label=i) for i, inst in enumerate(group)])
                if self.per_image:
                    info.update(sample_id=str(img_id), phrase=[self.region(i) for i in ids],
                                answer_phrase=[f'region{i}' for i in ids])
                else:
                    inst = group[0]
                    info.update(sample_id=f'{img_id}_{inst["ann_id"]}', phrase=self.region(1),
                                answer_phrase='region1', gt_bbox=inst['bbox'],
                                gt_segm=inst['mask'])
                infos.append(info)
        if self.num_regions_left_out:
            print_log(f'{self.ann_file}: {self.num_regions_left_out} instances left out of '
                      f'the interactive prompts (more than max_regions={self.max_regions} '
                      'in an image)', 'current', logging.WARNING)
        return infos


@DATASETS.register_module()
class CrowdHumanDataset(VLMBaseDataset):
    """CrowdHuman ``annotation_{split}.odgt``: one JSON record per line, ``ID`` and
    ``gtboxes`` with ``tag`` (``person`` / ``mask``), ``fbox`` (full body, xywh) and
    ``extra.ignore``. ``mask`` boxes and ignored persons are ignored regions. Image sizes
    are read from the images (the file does not hold them)."""

    CLASSES = ('person',)

    def __init__(self, *args, task: str = 'crowd', **kwargs) -> None:
        super().__init__(*args, task=task, **kwargs)

    def load_data_list(self) -> list[dict]:
        infos = []
        self.num_degenerate = 0
        try:
            lines = get_text(self.ann_file).splitlines()
        except FileNotFoundError as e:
            raise FileNotFoundError(f'CrowdHuman file not found: {self.ann_file}') from e
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                boxes = rec['gtboxes']
                instances = []
                for b in boxes:
                    x, y, w, h = b['fbox']
                    ignore = b.get('tag') != 'person' or b.get('extra', {}).get('ignore', 0)
                    if w < 1 or h < 1:
                        self.num_degenerate += 1
                        continue
                    instances.append(dict(bbox=[x, y, x + w, y + h], bbox_label=0,
                                          ignore_flag=int(bool(ignore))))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f'{self.ann_file} line {n}: not a CrowdHuman record '
                                 f'({e!r})') from e
            infos.append(dict(sample_id=rec['ID'], img_id=rec['ID'],
                              img_path=self.image_path(rec['ID'] + '.jpg'),
                              classes=self.CLASSES, instances=instances))
        if self.num_degenerate:
            print_log(f'{self.ann_file}: dropped {self.num_degenerate} degenerate boxes '
                      '(width or height < 1)', 'current')
        return infos
