"""Adapters of the region tasks: recognition (COCO/LVIS instances), captioning (refer-style
refs such as RefCOCOg and ShapesWorld, Visual Genome region descriptions) and VCR."""
import json
import os.path as osp

import numpy as np

from vlm2.datasets import VLMBaseDataset
from vlm2.datasets.coco_instances import load_coco_instances
from vlm2.registry import DATASETS

REGION = '<reg>region{}<region></reg>'


def _region(ann: dict) -> dict:
    return dict(id=ann['id'], segmentation=ann.get('segmentation'), bbox=ann['bbox'])


@DATASETS.register_module()
class RegionRecognitionDataset(VLMBaseDataset):
    """"What is in region1?" over COCO / LVIS-style instances (crowd regions skipped).

    Training: one sample per image, one question per region (up to ``max_regions``, shuffled
    with ``seed``). Test: one sample per region.
    """

    def __init__(self, *args, max_regions: int = 20, seed: int = 0, task: str = 'region',
                 **kwargs) -> None:
        self.max_regions = max_regions
        self.seed = seed
        super().__init__(*args, task=task, **kwargs)

    def load_data_list(self) -> list[dict]:
        images, anns, cats = load_coco_instances(self.ann_file)
        rng = np.random.default_rng(self.seed)
        infos = []
        for image_id, image in images.items():
            regions = [a for a in anns.get(image_id, []) if not a.get('iscrowd')]
            base = dict(img_path=self.image_path(image['file_name']), height=image['height'],
                        width=image['width'])
            if self.test_mode:
                for a in regions:
                    q = f'<image>\nWhat is in {REGION.format(1)}?'
                    infos.append(dict(base, sample_id=f'{image_id}_{a["id"]}',
                                      regions=[_region(a)], gt_answers=[cats[a['category_id']]],
                                      conversation=[{'from': 'human', 'value': q},
                                                    {'from': 'gpt',
                                                     'value': cats[a['category_id']]}]))
                continue
            if not regions:
                continue
            order = rng.permutation(len(regions))[:self.max_regions]
            turns = []
            for k, i in enumerate(order, start=1):
                q = f'What is in {REGION.format(k)}?'
                turns += [{'from': 'human', 'value': ('<image>\n' if k == 1 else '') + q},
                          {'from': 'gpt', 'value': cats[regions[i]['category_id']]}]
            infos.append(dict(base, sample_id=str(image_id), conversation=turns,
                              regions=[_region(regions[i]) for i in order]))
        return infos


@DATASETS.register_module()
class RefRegionCaptionDataset(VLMBaseDataset):
    """Region captions from refer-style refs (RefCOCOg, ShapesWorld): the expression of a
    ref is the caption of its instance's region.

    Args:
        ann_file: the refs file (a JSON list, or refer's ``refs(umd).p`` pickle).
        instances_file: the COCO instances file the refs point into.
        split: keep refs of this split (None: all).
    """

    PROMPT = 'Describe {} briefly.'

    def __init__(self, *args, instances_file: str, split=None, task: str = 'region_caption',
                 **kwargs) -> None:
        self.instances_file = instances_file
        self.split = split
        super().__init__(*args, task=task, **kwargs)

    def _refs(self) -> list:
        if self.ann_file.endswith('.p'):
            import pickle
            with open(self.ann_file, 'rb') as f:
                return pickle.load(f)
        with open(self.ann_file) as f:
            return json.load(f)

    def load_data_list(self) -> list[dict]:
        instances = self.instances_file
        if self.data_root and not osp.isabs(instances):
            instances = osp.join(self.data_root, instances)
        images, anns, _ = load_coco_instances(instances)
        by_id = {a['id']: a for group in anns.values() for a in group}
        infos = []
        for ref in self._refs():
            if self.split is not None and ref.get('split') != self.split:
                continue
            ann = by_id.get(ref['ann_id'])
            if ann is None:
                raise ValueError(f'{self.ann_file}: ref {ref["ref_id"]} points to annotation '
                                 f'{ref["ann_id"]}, which {instances} does not have')
            image = images[ann['image_id']]
            sents = [s['sent'] for s in ref['sentences']]
            base = dict(img_path=self.image_path(image['file_name']), height=image['height'],
                        width=image['width'], regions=[_region(ann)], gt_captions=sents)
            question = '<image>\n' + self.PROMPT.format(REGION.format(1))
            for k, sent in enumerate(sents[:1] if self.test_mode else sents):
                infos.append(dict(base, sample_id=f'{ref["ref_id"]}_{k}', conversation=[
                    {'from': 'human', 'value': question}, {'from': 'gpt', 'value': sent}]))
        return infos


@DATASETS.register_module()
class VGRegionCaptionDataset(VLMBaseDataset):
    """Visual Genome ``region_descriptions.json``: box regions with a phrase each."""

    def __init__(self, *args, image_sizes: dict = None, task: str = 'region_caption',
                 **kwargs) -> None:
        self.image_sizes = image_sizes  # optional {image_id: (h, w)}; else image_data.json
        super().__init__(*args, task=task, **kwargs)

    def load_data_list(self) -> list[dict]:
        with open(self.ann_file) as f:
            data = json.load(f)
        sizes = self.image_sizes
        if sizes is None:
            meta = osp.join(osp.dirname(self.ann_file), 'image_data.json')
            with open(meta) as f:
                sizes = {im['image_id']: (im['height'], im['width']) for im in json.load(f)}
        infos = []
        for entry in data:
            for r in entry['regions']:
                image_id = r['image_id']
                if image_id not in sizes:
                    raise ValueError(f'{self.ann_file}: region {r["region_id"]} refers to image '
                                     f'{image_id}, which has no size in image_data.json')
                h, w = sizes[image_id]
                q = '<image>\n' + RefRegionCaptionDataset.PROMPT.format(REGION.format(1))
                infos.append(dict(
                    sample_id=str(r['region_id']), img_path=self.image_path(f'{image_id}.jpg'),
                    height=h, width=w, gt_captions=[r['phrase']],
                    regions=[dict(id=r['region_id'], segmentation=None,
                                  bbox=[r['x'], r['y'], r['width'], r['height']])],
                    conversation=[{'from': 'human', 'value': q},
                                  {'from': 'gpt', 'value': r['phrase']}]))
        return infos


@DATASETS.register_module()
class VCRDataset(VLMBaseDataset):
    """Visual Commonsense Reasoning (``train.jsonl`` + per-image metadata JSON).

    Object references in the question, answers and rationales become regions
    (``<reg>region{i}<region></reg>``, numbered by object index, masks from the metadata
    polygons, or boxes where an object has none). Each annotation gives two multiple-choice
    samples: Q→A, and QA→R with the right answer given.
    """

    LETTERS = 'ABCD'

    def __init__(self, *args, task: str = 'vcr', **kwargs) -> None:
        super().__init__(*args, task=task, **kwargs)

    def _text(self, tokens: list, objects: list) -> tuple[str, list[int]]:
        words, mentioned = [], []
        for t in tokens:
            if isinstance(t, list):
                words.append(' and '.join(REGION.format(i + 1) for i in t))
                mentioned += t
            else:
                words.append(t)
        return ' '.join(words), mentioned

    def _choices(self, choices: list, objects: list) -> tuple[str, list[int]]:
        parts, mentioned = [], []
        for letter, choice in zip(self.LETTERS, choices):
            text, m = self._text(choice, objects)
            parts.append(f'({letter}) {text}')
            mentioned += m
        return ' '.join(parts), mentioned

    def load_data_list(self) -> list[dict]:
        infos = []
        with open(self.ann_file) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for rec in records:
            aid = rec.get('annot_id', rec.get('question_number'))
            meta_path = self.image_path(rec['metadata_fn'])
            try:
                with open(meta_path) as f:
                    meta = json.load(f)
            except FileNotFoundError as e:
                raise FileNotFoundError(f'{self.ann_file} {aid}: metadata {meta_path} '
                                        'not found') from e
            regions = []
            for i, box in enumerate(meta['boxes']):
                polys = [list(np.asarray(p, float).reshape(-1)) for p in meta['segms'][i]
                         if len(p) >= 3] if i < len(meta.get('segms', [])) else []
                regions.append(dict(id=f'{aid}/object{i}', segmentation=polys or None,
                                    bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]]))
            objects = rec['objects']
            question, q_obj = self._text(rec['question'], objects)
            answers, a_obj = self._choices(rec['answer_choices'], objects)
            right, r_obj = self._text(rec['answer_choices'][rec['answer_label']], objects)
            rationales, why_obj = self._choices(rec['rationale_choices'], objects)
            base = dict(img_path=self.image_path(rec['img_fn']), height=meta['height'],
                        width=meta['width'], annot_id=str(aid))
            qa = (f'<image>\n{question}\nOptions: {answers}\n'
                  "Answer with the option's letter.")
            qar = (f'<image>\n{question}\nAnswer: {right}\nWhy? Options: {rationales}\n'
                   "Answer with the option's letter.")
            for kind, prompt, mentioned, label in [
                    ('qa', qa, q_obj + a_obj, rec['answer_label']),
                    ('qar', qar, q_obj + r_obj + why_obj, rec['rationale_label'])]:
                infos.append(dict(base, sample_id=f'{aid}_{kind}', vcr_kind=kind,
                                  regions=[regions[i] for i in mentioned],
                                  gt_answers=[self.LETTERS[label]],
                                  conversation=[{'from': 'human', 'value': prompt},
                                                {'from': 'gpt',
                                                 'value': self.LETTERS[label]}]))
        return infos
