"""Keypoint sets: names, sigmas, flip pairs and skeleton of one category of a data set.

Real data sets describe one keypoint set in an mmpose metainfo file (``coco.py``, ``ap10k.py``,
``crowdpose.py``, ...), read with mmpose's ``parse_pose_metainfo``. Files whose categories
each define their own keypoints (ShapesWorld) carry the names and skeleton in the COCO
``categories`` entries; their sigmas then come from the config.
"""
import re
from dataclasses import dataclass, field
from typing import Optional, Union

from mmpose.datasets.datasets.utils import parse_pose_metainfo


@dataclass
class KeypointSet:
    """The keypoints of one category.

    Attributes:
        names: keypoint names in the annotation order.
        sigmas: per-keypoint OKS sigmas (empty for PCK-only sets).
        flip_pairs: index pairs swapped by a horizontal flip.
        skeleton: 0-based index pairs of the links drawn between keypoints.
    """
    names: list[str]
    sigmas: list[float] = field(default_factory=list)
    flip_pairs: list[tuple[int, int]] = field(default_factory=list)
    skeleton: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return dict(names=list(self.names), sigmas=list(self.sigmas),
                    flip_pairs=[list(p) for p in self.flip_pairs],
                    skeleton=[list(p) for p in self.skeleton])


def phrase_of(name: str) -> str:
    """A keypoint name as prompt text: ``left_wrist`` → ``left wrist``, ``eyeL`` → ``eye l``."""
    name = re.sub(r'(?<=[a-z])(?=[A-Z0-9])', ' ', name.replace('_', ' '))
    return ' '.join(name.lower().split())


def from_metainfo_file(path: str) -> KeypointSet:
    """The keypoint set of an mmpose metainfo file (found under mmpose's ``.mim`` too)."""
    meta = parse_pose_metainfo(dict(from_file=path))
    k = meta['num_keypoints']
    return KeypointSet(
        names=[meta['keypoint_id2name'][i] for i in range(k)],
        sigmas=[float(s) for s in meta['sigmas']] if meta['sigmas'] is not None and
        len(meta['sigmas']) else [],
        flip_pairs=[tuple(p) for p in meta['flip_pairs']],
        skeleton=[tuple(p) for p in meta['skeleton_links']])


def _swap_name(name: str) -> Optional[str]:
    for a, b in (('left', 'right'), ('right', 'left')):
        if re.search(rf'\b{a}\b', name):
            return re.sub(rf'\b{a}\b', b, name)
    return None


def from_coco_category(category: dict, sigmas: Union[float, list, dict],
                       where: str) -> KeypointSet:
    """The keypoint set a COCO ``categories`` entry defines (``keypoints``, ``skeleton``).

    Flip pairs are the left/right name pairs. ``sigmas`` is one value for all keypoints, a
    list, or a dict by category name.
    """
    names = list(category.get('keypoints') or [])
    if not names:
        raise ValueError(f'{where}: category {category.get("id")} ({category.get("name")}) '
                         'defines no "keypoints" names and no metainfo file was given')
    if isinstance(sigmas, dict):
        if category['name'] not in sigmas:
            raise KeyError(f'{where}: no sigmas for category {category["name"]!r} in the config '
                           f'(have {sorted(sigmas)})')
        sigmas = sigmas[category['name']]
    values = [float(sigmas)] * len(names) if isinstance(sigmas, (int, float)) else list(sigmas)
    if len(values) != len(names):
        raise ValueError(f'{where}: category {category["name"]!r} has {len(names)} keypoints '
                         f'but {len(values)} sigmas')
    index = {n: i for i, n in enumerate(names)}
    pairs = sorted({tuple(sorted((i, index[_swap_name(n)]))) for i, n in enumerate(names)
                    if _swap_name(n) in index})
    skeleton = [(a - 1, b - 1) for a, b in category.get('skeleton') or []]
    return KeypointSet(names, values, pairs, skeleton)
