"""The pose sample's prompt, the decoder's own image and its targets aligned to the prompt."""
from typing import Optional, Sequence, Union

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform

from vlm2.datasets.transforms import sample_rng
from vlm2.registry import TRANSFORMS
from .keypoint_sets import phrase_of
from .prompts import HUMAN, HUMAN_ALL, full_prompt, sample_prompt


@TRANSFORMS.register_module()
class PoseTargets(BaseTransform):
    """Builds the conversation of a pose sample and the decoder's inputs and targets.

    Reads ``img`` (BGR), ``pose_anns`` and ``pose_categories`` (set by the adapters) and writes:

    - ``conversation``: the prompt of :mod:`.prompts` (sampled in training, full in test);
    - ``pose_img``: the decoder's own image, RGB uint8 (3, h, w), its long side rescaled to
      ``scale`` (the paper's decoders read their own image, not the CLIP tiles);
    - ``pose_prompt``: ``classes``, ``category_ids`` and ``keypoints`` phrases, in prompt order,
      and ``scale_factor``;
    - ``gt_pose``: ``bboxes`` (G, 4) xyxy in ``pose_img`` pixels, ``labels`` (G,) class-phrase
      slot indices, ``keypoints`` (G, K, 3) aligned to the prompt's keypoint phrases (visibility
      0 where unlabelled or not defined), ``kpt_valid`` (G, K) whether the instance's category
      defines that keypoint, ``sigmas`` (G, K), ``areas`` (G,).

    K differs between samples and data sets; the decoder masks, it never pads to one length.
    Crowd annotations and instances of classes the prompt does not ask for are no targets.

    Args:
        scale: the long side of the decoder image (the short side follows the aspect ratio).
        train: sample random prompts (else the full evaluation prompt).
        keep_positive / max_negatives / all_keypoints_prob: see :func:`.prompts.sample_prompt`.
        class_token / keypoint_token: the routing tokens written after each phrase.
        seed: None draws each training prompt from numpy's global generator, which MMEngine
            seeds (``randomness.seed``) in the main process and per data-loader worker, so a
            seeded run repeats; an int fixes each sample's prompt by (seed, sample id).
    """

    def __init__(self, scale: int = 128, train: bool = True, keep_positive: float = 0.9,
                 max_negatives: int = 3, all_keypoints_prob: float = 0.5,
                 class_token: str = '[DET]', keypoint_token: str = '[POSE]',
                 template: str = HUMAN, template_all: str = HUMAN_ALL,
                 seed: Optional[int] = None) -> None:
        self.scale = scale
        self.train = train
        self.keep_positive = keep_positive
        self.max_negatives = max_negatives
        self.all_keypoints_prob = all_keypoints_prob
        self.class_token = class_token
        self.keypoint_token = keypoint_token
        self.template = template
        self.template_all = template_all
        self.seed = seed

    def transform(self, results: dict) -> dict:
        categories = results['pose_categories']
        anns = [a for a in results['pose_anns'] if not a.get('iscrowd', 0)]
        if self.train:
            sid = str(results.get('sample_id', ''))
            rng = sample_rng(None) if self.seed is None else sample_rng(sid, self.seed)
            prompt = sample_prompt(categories, {a['category_id'] for a in anns}, rng,
                                   self.keep_positive, self.max_negatives,
                                   self.all_keypoints_prob,
                                   results.get('pose_keypoints_override'))
        else:
            prompt = full_prompt(categories)
            if results.get('pose_keypoints_override'):
                prompt.keypoints = list(results['pose_keypoints_override'])
                prompt.all_keypoints = False
        results['conversation'] = prompt.conversation(self.class_token, self.keypoint_token,
                                                      self.template, self.template_all)
        img = results['img']
        h, w = img.shape[:2]
        factor = self.scale / max(h, w)
        img = mmcv.imresize(img, (max(1, round(w * factor)), max(1, round(h * factor))))
        results['pose_img'] = torch.from_numpy(
            np.ascontiguousarray(mmcv.bgr2rgb(img).transpose(2, 0, 1)))
        results['pose_prompt'] = dict(prompt.to_dict(), scale_factor=factor)
        results['gt_pose'] = self._targets(anns, categories, prompt, factor)
        return results

    @staticmethod
    def _targets(anns: list, categories: dict, prompt, factor: float) -> dict:
        slot = {c: i for i, c in enumerate(prompt.category_ids)}
        kpt_index = {k: i for i, k in enumerate(prompt.keypoints)}
        anns = [a for a in anns if a['category_id'] in slot]
        g, k = len(anns), len(prompt.keypoints)
        boxes = np.zeros((g, 4), np.float32)
        labels = np.zeros(g, np.int64)
        kpts = np.zeros((g, k, 3), np.float32)
        valid = np.zeros((g, k), bool)
        sigmas = np.full((g, k), 0.1, np.float32)
        areas = np.zeros(g, np.float32)
        for i, a in enumerate(anns):
            x, y, bw, bh = a['bbox']
            boxes[i] = np.array([x, y, x + bw, y + bh]) * factor
            labels[i] = slot[a['category_id']]
            areas[i] = a.get('area', bw * bh) * factor ** 2
            kset = categories[a['category_id']]['keypoints']
            src = np.asarray(a['keypoints'], np.float32).reshape(-1, 3)
            for j, name in enumerate(kset['names']):
                t = kpt_index.get(phrase_of(name))
                if t is None:
                    continue
                valid[i, t] = True
                kpts[i, t] = (src[j, 0] * factor, src[j, 1] * factor, src[j, 2])
                if kset['sigmas']:
                    sigmas[i, t] = kset['sigmas'][j]
        return dict(bboxes=torch.from_numpy(boxes), labels=torch.from_numpy(labels),
                    keypoints=torch.from_numpy(kpts), kpt_valid=torch.from_numpy(valid),
                    sigmas=torch.from_numpy(sigmas), areas=torch.from_numpy(areas))


@TRANSFORMS.register_module()
class AskKeypoints(BaseTransform):
    """Fixes the keypoint phrases a prompt asks for (e.g. ``['left wrist', 'right wrist']``),
    for evaluation or inference on a subset; place it before :class:`PoseTargets`."""

    def __init__(self, keypoints: Union[str, Sequence[str]]) -> None:
        self.keypoints = [k.strip() for k in keypoints.split(',')] \
            if isinstance(keypoints, str) else list(keypoints)

    def transform(self, results: dict) -> dict:
        results['pose_keypoints_override'] = self.keypoints
        return results
