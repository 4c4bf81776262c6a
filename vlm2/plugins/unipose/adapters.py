"""Dataset adapters of keypoint detection: COCO keypoints JSON and the sets that reuse it.

All of them are COCO keypoints files (``images``, ``annotations`` with ``keypoints`` as
``[x, y, v] * K``, ``categories``); what differs is where the keypoint set comes from and which
metric scores it:

- OKS sets, with an mmpose metainfo file: COCO, AP-10K, CrowdPose, Human-Art, MacaquePose;
- PCK sets (no sigmas): AnimalKingdom, 300W faces, Desert Locust, Vinegar Fly;
- ShapesWorld, whose categories each define their own keypoints in the JSON.

Each sample holds the image's annotations; :class:`~.transforms.PoseTargets` turns them into a
prompt and targets.
"""
import json
from collections import defaultdict
from typing import Optional, Union

from mmengine.logging import print_log

from vlm2.datasets import VLMBaseDataset
from vlm2.registry import DATASETS
from .keypoint_sets import KeypointSet, from_coco_category, from_metainfo_file


@DATASETS.register_module()
class CocoKeypointsDataset(VLMBaseDataset):
    """A COCO keypoints file read for the pose decoder (task family ``'pose'``).

    Args:
        pose_metainfo: an mmpose metainfo file (``configs/_base_/datasets/coco.py``; mmpose's
            own copy is found by name) giving the keypoint set of every category; None to read
            each category's ``keypoints`` and ``skeleton`` from the JSON.
        sigmas: the OKS sigmas of JSON-defined keypoint sets: one value, a list, or a dict by
            category name.
        metric: ``'oks'`` (COCO AP) or ``'pck'`` (PCK, normalised by the box size).
        dataset_name: names the set in the metric's keys.
        min_keypoints: training skips images whose instances have fewer labelled keypoints in
            total (COCO-style pose training drops such images); evaluation keeps every image.
    """

    def __init__(self, *args, pose_metainfo: Optional[str] = None,
                 sigmas: Union[float, list, dict] = 0.1, metric: str = 'oks',
                 dataset_name: str = 'coco', min_keypoints: int = 1, task: str = 'pose',
                 **kwargs) -> None:
        if metric not in ('oks', 'pck'):
            raise ValueError(f'CocoKeypointsDataset.metric must be "oks" or "pck", got {metric!r}')
        self.pose_metainfo = pose_metainfo
        self.sigmas = sigmas
        self.metric = metric
        self.dataset_name = dataset_name
        self.min_keypoints = min_keypoints
        super().__init__(*args, task=task, **kwargs)

    def _categories(self, coco: dict) -> dict:
        shared: Optional[KeypointSet] = None
        if self.pose_metainfo:
            shared = from_metainfo_file(self.pose_metainfo)
        out = {}
        for cat in coco['categories']:
            kset = shared or from_coco_category(cat, self.sigmas, self.ann_file)
            names = cat.get('keypoints')
            if shared is not None and names and len(names) != len(shared):
                raise ValueError(f'{self.ann_file}: category {cat["id"]} ({cat["name"]}) lists '
                                 f'{len(names)} keypoints but {self.pose_metainfo} defines '
                                 f'{len(shared)}')
            if self.metric == 'oks' and not kset.sigmas:
                raise ValueError(f'{self.ann_file}: OKS needs sigmas, but the keypoint set of '
                                 f'{cat["name"]!r} has none; use metric="pck"')
            out[int(cat['id'])] = dict(name=cat['name'].replace('_', ' '),
                                       keypoints=kset.to_dict())
        return out

    def load_data_list(self) -> list[dict]:
        try:
            with open(self.ann_file) as f:
                coco = json.load(f)
        except FileNotFoundError as e:
            raise FileNotFoundError(f'COCO keypoints file not found: {self.ann_file}') from e
        for key in ('images', 'annotations', 'categories'):
            if key not in coco:
                raise ValueError(f'{self.ann_file}: not a COCO keypoints file (no "{key}")')
        categories = self._categories(coco)
        by_image = defaultdict(list)
        for ann in coco['annotations']:
            cat = categories.get(int(ann['category_id']))
            if cat is None:
                raise ValueError(f'{self.ann_file} annotation id={ann.get("id")}: unknown '
                                 f'category_id {ann["category_id"]}')
            k = len(cat['keypoints']['names'])
            n = len(ann.get('keypoints', []))
            if n != 3 * k:
                raise ValueError(
                    f'{self.ann_file} annotation id={ann.get("id")}: {n}'
                    f' keypoint values, but category {ann["category_id"]} ({cat["name"]}) has '
                    f'{k} keypoints ({3 * k} values expected)')
            if 'bbox' not in ann:
                raise ValueError(f'{self.ann_file} annotation id={ann.get("id")}: no "bbox"')
            by_image[ann['image_id']].append(ann)
        infos, skipped = [], 0
        for img in coco['images']:
            anns = by_image.get(img['id'], [])
            labelled = sum(sum(1 for v in a['keypoints'][2::3] if v > 0) for a in anns)
            if not self.test_mode and labelled < self.min_keypoints:
                skipped += 1
                continue
            infos.append(dict(
                sample_id=str(img['id']), img_id=img['id'],
                img_path=self.image_path(img['file_name']),
                ori_shape=(img['height'], img['width']),
                pose_anns=anns, pose_categories=categories,
                pose_eval=dict(dataset=self.dataset_name, metric=self.metric, img_id=img['id'],
                               width=img['width'], height=img['height'], anns=anns,
                               categories=categories)))
        if skipped:
            print_log(f'{self.ann_file}: {skipped} of {len(coco["images"])} images skipped for '
                      f'training (fewer than {self.min_keypoints} labelled keypoints)',
                      logger='current')
        return infos


def _preset(name: str, metainfo: Optional[str], metric: str, doc: str):
    """A registered adapter for one data set: CocoKeypointsDataset with its defaults."""
    def __init__(self, *args, **kwargs):
        kwargs.setdefault('pose_metainfo', metainfo)
        kwargs.setdefault('metric', metric)
        kwargs.setdefault('dataset_name', name)
        CocoKeypointsDataset.__init__(self, *args, **kwargs)
    cls = type(doc.split(':')[0], (CocoKeypointsDataset,), dict(__init__=__init__, __doc__=doc))
    return DATASETS.register_module(module=cls)


# The mmpose metainfo files are found in mmpose's own copy of configs/_base_/datasets/.
CocoPoseDataset = _preset('coco', 'configs/_base_/datasets/coco.py', 'oks',
                          'CocoPoseDataset: COCO person keypoints (17 keypoints), OKS AP.')
AP10KDataset = _preset('ap10k', 'configs/_base_/datasets/ap10k.py', 'oks',
                       'AP10KDataset: AP-10K animals (54 species, 17 keypoints), OKS AP.')
CrowdPoseDataset = _preset('crowdpose', 'configs/_base_/datasets/crowdpose.py', 'oks',
                           'CrowdPoseDataset: CrowdPose people (14 keypoints), OKS AP.')
HumanArtDataset = _preset('humanart', 'configs/_base_/datasets/humanart.py', 'oks',
                          'HumanArtDataset: Human-Art people in art (COCO 17 keypoints), OKS AP.')
MacaquePoseDataset = _preset('macaque', 'configs/_base_/datasets/macaque.py', 'oks',
                             'MacaquePoseDataset: MacaquePose monkeys (17 keypoints), OKS AP.')
AnimalKingdomDataset = _preset('animalkingdom', 'configs/_base_/datasets/ak.py', 'pck',
                               'AnimalKingdomDataset: AnimalKingdom (23 keypoints), PCK@0.2.')
Face300WDataset = _preset('300w', 'configs/_base_/datasets/300w.py', 'pck',
                          'Face300WDataset: 300W faces (68 landmarks), PCK@0.2.')
LocustDataset = _preset('locust', 'configs/_base_/datasets/locust.py', 'pck',
                        'LocustDataset: Desert Locust (35 keypoints), PCK@0.2.')
FlyDataset = _preset('fly', 'configs/_base_/datasets/fly.py', 'pck',
                     'FlyDataset: Vinegar Fly (32 keypoints), PCK@0.2.')
ShapesWorldPoseDataset = _preset(
    'shapes_world', None, 'oks',
    'ShapesWorldPoseDataset: ShapesWorld keypoints_*.json; each shape kind defines its own '
    'keypoints in the JSON (3 to 7), sigmas from the config.')
