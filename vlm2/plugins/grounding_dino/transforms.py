"""Pipeline pieces of the perception decoder: phrase slots, prompts, flips, packing.

The decoder's image goes through mmdet's own transforms (``mmdet.LoadAnnotations``,
``mmdet.RandomFlip``, ``mmdet.RandomChoiceResize``, ...); these transforms add what mmdet has
no notion of: the prompt's phrase list (whose order defines the labels) and the text that
must follow a horizontal flip.
"""
import random
import re
from typing import Optional, Sequence, Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import PackDetInputs
from mmengine.logging import print_log

from vlm2.registry import TRANSFORMS

# Prompt templates in the spirit of the paper's ("Please detect {classes} in the image.").
DET_TEMPLATES = (
    'Please detect {classes} in the image.',
    'Detect {classes} in this image.',
    'Can you find all {classes} in the image?',
    'Please locate every {classes} in the picture.',
)
SEG_TEMPLATES = (
    'Please segment {classes} in the image.',
    'Segment {classes} in this image.',
    'Can you segment all {classes} in the picture?',
)
REC_TEMPLATES = (
    'Where is {phrase}?',
    'Please locate {phrase} in the image.',
    'Find {phrase} in this picture.',
)
RES_TEMPLATES = (
    'Please segment {phrase} in the image.',
    'Segment {phrase} in this picture.',
)
INTERACTIVE_TEMPLATES = (
    'Please segment {phrase}.',
    'Segment {phrase} in the image.',
    'Can you segment {phrase}?',
)
TEMPLATES = dict(det=DET_TEMPLATES, seg=SEG_TEMPLATES, rec=REC_TEMPLATES, res=RES_TEMPLATES,
                 interactive=INTERACTIVE_TEMPLATES)


def _templates(templates: Union[str, Sequence[str]]) -> tuple[str, ...]:
    return TEMPLATES[templates] if isinstance(templates, str) else tuple(templates)


@TRANSFORMS.register_module()
class PhraseSlots(BaseTransform):
    """Turns a detection sample into a phrase prompt whose slots are the labels.

    Reads ``classes`` (all class names of the source), ``gt_bboxes_labels`` (class indices,
    from ``mmdet.LoadAnnotations``). In training (``shuffle=True``) the prompt lists the
    classes present, padded with random negative classes, in random order; at test time it
    lists all classes in source order. Writes ``phrase_names`` (the slots), ``phrase_classes``
    (the class index of each slot), remaps ``gt_bboxes_labels`` to slot indices and writes the
    ``conversation``: ``<image>\\n{template}`` → ``circle[DET], star[DET]``.

    Args:
        routing_token: ``'[DET]'`` (boxes) or ``'[SEG]'`` (instance masks).
        templates: ``'det'``, ``'seg'`` or a list with ``{classes}``.
        max_phrases: at most this many slots (the decoder's capacity is 256).
        num_negatives: negatives added in training: an int, a ``(low, high)`` range drawn
            uniformly, or None to fill up to ``max_phrases``.
        shuffle: training behaviour (random order, negatives, random template).
    """

    def __init__(self, routing_token: str = '[DET]', templates: Union[str, Sequence[str]] = 'det',
                 max_phrases: int = 256, num_negatives: Union[None, int, Sequence[int]] = None,
                 shuffle: bool = True) -> None:
        self.routing_token = routing_token
        self.templates = _templates(templates)
        self.max_phrases = max_phrases
        self.num_negatives = num_negatives
        self.shuffle = shuffle
        self.dropped = 0

    def _num_negatives(self, room: int) -> int:
        if self.num_negatives is None:
            return room
        if isinstance(self.num_negatives, int):
            return min(room, self.num_negatives)
        low, high = self.num_negatives
        return min(room, random.randint(low, high))

    def slots(self, num_classes: int, present: Sequence[int]) -> list[int]:
        """Class index of each slot."""
        if not self.shuffle:
            if num_classes > self.max_phrases:
                raise ValueError(f'PhraseSlots: {num_classes} classes do not fit in '
                                 f'max_phrases={self.max_phrases}')
            return list(range(num_classes))
        pos = sorted(set(int(c) for c in present))
        random.shuffle(pos)
        pos = pos[:self.max_phrases]
        rest = [c for c in range(num_classes) if c not in set(pos)]
        neg = random.sample(rest, self._num_negatives(min(len(rest), self.max_phrases - len(pos))))
        slots = pos + neg
        random.shuffle(slots)
        return slots

    def transform(self, results: dict) -> dict:
        classes = list(results['classes'])
        labels = np.asarray(results.get('gt_bboxes_labels', np.zeros(0)), dtype=np.int64)
        slots = self.slots(len(classes), labels.tolist())
        where = {c: i for i, c in enumerate(slots)}
        keep = np.array([int(c) in where for c in labels], dtype=bool)
        if not keep.all():
            self.dropped += int((~keep).sum())
            print_log(f'PhraseSlots: {int((~keep).sum())} instances of '
                      f'{results.get("sample_id")} dropped (their classes exceed '
                      f'max_phrases={self.max_phrases}; {self.dropped} so far)', 'current')
            _keep_instances(results, keep)
            labels = labels[keep]
        results['gt_bboxes_labels'] = np.array([where[int(c)] for c in labels], dtype=np.int64)
        names = [classes[c] for c in slots]
        results['phrase_names'] = names
        results['phrase_classes'] = slots
        template = random.choice(self.templates) if self.shuffle else self.templates[0]
        question = template.format(classes=', '.join(names))
        answer = ', '.join(f'{n}{self.routing_token}' for n in names)
        results['conversation'] = [{'from': 'human', 'value': f'<image>\n{question}'},
                                   {'from': 'gpt', 'value': answer}]
        return results


def _keep_instances(results: dict, keep: np.ndarray) -> None:
    for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks'):
        if key in results:
            results[key] = results[key][keep] if key != 'gt_masks' \
                else results[key][np.nonzero(keep)[0]]


@TRANSFORMS.register_module()
class ReferringPrompt(BaseTransform):
    """The conversation of a referring sample: ``Where is {phrase}?`` → ``{phrase}[GRD]``.

    Reads ``phrase`` (the referring expression; its one target has label 0) and, where the
    answer names it differently, ``answer_phrase`` (interactive segmentation: the question
    holds ``<reg>region1<region></reg>``, the answer ``region1[SEG]``).

    A list of phrases (several objects of one image) becomes one slot each, joined with
    commas: ``the red circle[GRD], the blue star[GRD]``; target label ``i`` is slot ``i``.
    An element may be a list of sentences for one object: training (``shuffle``) draws one
    and the slots' order, remapping the labels; otherwise the first sentence and the given
    order are kept. Answers named apart (regions numbered in the question) keep their order;
    there training draws which region gets which number instead (``regions`` and the labels
    follow), so that a number says nothing about which object it is. In a fixed numbering
    (annotation order) ``region1`` is always the first annotated object, and a decoder can
    learn to answer it from the name alone, whatever region was drawn.
    """

    def __init__(self, routing_token: str = '[GRD]', templates: Union[str, Sequence[str]] = 'rec',
                 shuffle: bool = True) -> None:
        self.routing_token = routing_token
        self.templates = _templates(templates)
        self.shuffle = shuffle

    @staticmethod
    def _relabel(results: dict, order: list[int]) -> None:
        """Slot ``j`` now holds what was slot ``order[j]``."""
        where = {old: new for new, old in enumerate(order)}
        labels = results.get('gt_bboxes_labels', np.zeros(0, dtype=np.int64))
        results['gt_bboxes_labels'] = np.array([where[int(c)] for c in labels], dtype=np.int64)

    def transform(self, results: dict) -> dict:
        phrase = results['phrase']
        answer = results.get('answer_phrase', phrase)
        phrases, answers = ([phrase], [answer]) if isinstance(phrase, str) else (phrase, answer)
        if not isinstance(phrase, str) and 'answer_phrase' not in results:
            phrases = [(random.choice(p) if self.shuffle else p[0])
                       if isinstance(p, (list, tuple)) else p for p in phrases]
            order = list(range(len(phrases)))
            if self.shuffle:
                random.shuffle(order)
                self._relabel(results, order)
            phrases = answers = results['phrase'] = [phrases[i] for i in order]
        elif not isinstance(phrase, str) and self.shuffle and 'regions' in results:
            order = random.sample(range(len(phrases)), len(phrases))
            results['regions'] = [results['regions'][i] for i in order]
            self._relabel(results, order)
        template = random.choice(self.templates) if self.shuffle else self.templates[0]
        results['phrase_names'] = list(answers)
        results['conversation'] = [
            {'from': 'human', 'value': '<image>\n' + template.format(phrase=', '.join(phrases))},
            {'from': 'gpt', 'value': ', '.join(f'{a}{self.routing_token}' for a in answers)}]
        return results


@TRANSFORMS.register_module()
class FlipPhrases(BaseTransform):
    """After ``mmdet.RandomFlip``: swap left/right words in the text of a horizontally
    flipped sample, so referring phrases still describe the (flipped) picture."""

    PAIRS = {'left': 'right', 'right': 'left'}
    WORD = re.compile(r'\b(left|right)\b')

    def swap(self, text: str) -> str:
        return self.WORD.sub(lambda m: self.PAIRS[m.group(1)], text)

    def transform(self, results: dict) -> dict:
        if not results.get('flip') or results.get('flip_direction') != 'horizontal':
            return results
        results['conversation'] = [dict(t, value=self.swap(t['value']))
                                   for t in results['conversation']]
        for key in ('phrase', 'phrase_names'):
            if isinstance(results.get(key), str):
                results[key] = self.swap(results[key])
            elif isinstance(results.get(key), list):
                results[key] = [self.swap(p) for p in results[key]]
        return results


@TRANSFORMS.register_module()
class PackDecoderInputs(BaseTransform):
    """mmdet's ``PackDetInputs`` for the decoder's own image: writes ``det_inputs`` (uint8
    (3, H, W)) and ``det_sample`` (a ``DetDataSample`` with ``gt_instances`` whose labels are
    phrase slots). List both in ``PackVLMInputs(fields=...)`` after it."""

    def __init__(self, meta_keys: Optional[Sequence[str]] = (
            'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
            'flip_direction')) -> None:
        self.pack = PackDetInputs(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        packed = self.pack(dict(results))
        results['det_inputs'] = packed['inputs']
        results['det_sample'] = packed['data_samples']
        return results
