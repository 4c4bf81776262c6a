"""Pose prompts: which classes and which keypoints a sample asks for, and its conversation.

A prompt names object classes, each answered with a class phrase (``circle[DET]``), and
keypoints, each answered with a keypoint phrase (``top tip[POSE]``)::

    human: <image>\\nFind the keypoints top tip, center of circle, star.
    gpt:   circle[DET], star[DET]; top tip[POSE], center[POSE]

Training samples random class subsets with negatives (UniPose and VisionLLM v2 shuffle class
lists with negatives) and random keypoint subsets, in random order; evaluation asks for every
class of the data set and every keypoint of those classes, in the data set's order.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .keypoint_sets import phrase_of

HUMAN = '<image>\nFind the keypoints {keypoints} of {classes}.'
HUMAN_ALL = '<image>\nFind all keypoints of {classes}.'


@dataclass
class PosePrompt:
    """The class phrases and keypoint phrases of one sample, in prompt order."""
    classes: list[str]
    category_ids: list[int]
    keypoints: list[str]
    all_keypoints: bool = False

    def conversation(self, class_token: str = '[DET]', keypoint_token: str = '[POSE]',
                     template: str = HUMAN, template_all: str = HUMAN_ALL) -> list[dict]:
        """The LLaVA turns; routing tokens are written without their ``[EMB]`` runs. A prompt
        asking for all keypoints of its classes does not list them (the answer does, in the
        data set's order), which keeps the sequence short."""
        human = (template_all if self.all_keypoints else template).format(
            keypoints=', '.join(self.keypoints), classes=', '.join(self.classes))
        answer = ', '.join(f'{c}{class_token}' for c in self.classes) + '; ' + \
            ', '.join(f'{k}{keypoint_token}' for k in self.keypoints)
        return [{'from': 'human', 'value': human}, {'from': 'gpt', 'value': answer}]

    def to_dict(self) -> dict:
        return dict(classes=list(self.classes), category_ids=list(self.category_ids),
                    keypoints=list(self.keypoints))


def union_keypoints(categories: dict, cat_ids: Sequence[int]) -> list[str]:
    """Keypoint phrases of the given categories, in order of first appearance."""
    out: list[str] = []
    for cid in cat_ids:
        for name in categories[cid]['keypoints']['names']:
            phrase = phrase_of(name)
            if phrase not in out:
                out.append(phrase)
    return out


def full_prompt(categories: dict) -> PosePrompt:
    """The evaluation prompt: every class and all of their keypoints, in data-set order."""
    ids = list(categories)
    return PosePrompt([categories[c]['name'] for c in ids], ids, union_keypoints(categories, ids),
                      all_keypoints=True)


def sample_prompt(categories: dict, positive_ids: Sequence[int], rng: np.random.Generator,
                  keep_positive: float = 0.9, max_negatives: int = 3,
                  all_keypoints_prob: float = 0.5,
                  fixed_keypoints: Optional[Sequence[str]] = None) -> PosePrompt:
    """A training prompt: a random class subset with negatives, and a keypoint subset.

    Each positive class is kept with probability ``keep_positive`` (at least one when the
    image has any), up to ``max_negatives`` absent classes are added, and the list is
    shuffled. With probability ``all_keypoints_prob`` all keypoints of the chosen classes are
    asked, in the data set's order, otherwise a random non-empty subset in random order.
    """
    ids = list(categories)
    pos = [c for c in ids if c in set(positive_ids)]
    kept = [c for c in pos if rng.random() < keep_positive]
    if pos and not kept:
        kept = [pos[int(rng.integers(len(pos)))]]
    neg = [c for c in ids if c not in pos]
    n_neg = int(rng.integers(0, min(max_negatives, len(neg)) + 1)) if neg else 0
    if not kept and not n_neg:
        n_neg = min(1, len(neg))
    chosen = kept + [neg[i] for i in rng.permutation(len(neg))[:n_neg]]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    if not chosen:  # a data set of one category whose image has no instance
        chosen = ids[:1]
    names = [categories[c]['name'] for c in chosen]
    if fixed_keypoints:
        return PosePrompt(names, chosen, list(fixed_keypoints))
    kpts = union_keypoints(categories, chosen)
    if rng.random() < all_keypoints_prob:
        return PosePrompt(names, chosen, kpts, all_keypoints=True)
    size = int(rng.integers(1, len(kpts) + 1))
    return PosePrompt(names, chosen, [kpts[i] for i in rng.permutation(len(kpts))[:size]])
