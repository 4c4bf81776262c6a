"""Dataset adapters of generation and editing: caption→image pairs and edit triplets.

Both write a conversation whose answer is just the routing token (``[GEN]`` / ``[EDIT]``;
the conversation encoder appends the decoder's run of ``[EMB]``), plus ``target_path``
(and ``source_path``) for :class:`~vlm2.plugins.diffusion.transforms.LoadDiffusionImages`.
"""
import os
import os.path as osp
from typing import Sequence

from vlm2.datasets import VLMBaseDataset, load_json_records
from vlm2.registry import DATASETS

#: Prompt templates of text-to-image ({} is the caption).
GEN_TEMPLATES: tuple[str, ...] = (
    'Generate an image of {}.', 'Please draw {}.', 'Draw a picture of {}.',
    'Can you generate an image of {}?')
#: Prompt templates of editing ({} is the instruction).
EDIT_TEMPLATES: tuple[str, ...] = (
    'Edit the image: {}.', 'Please edit the image: {}.', 'Edit this picture: {}.')
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')


def _pick(templates: Sequence[str], index: int, seed: int) -> str:
    """A template per sample, fixed by its index and the seed (reproducible splits)."""
    return templates[(index * 7919 + seed) % len(templates)]


@DATASETS.register_module()
class CaptionImageDataset(VLMBaseDataset):
    """Caption → image pairs for text-to-image (LAION / JourneyDB style).

    Two layouts:
      * ``ann_file`` a JSONL or JSON list of ``{image_key: path, caption_key: text}``
        (paths relative to ``data_prefix['img_path']``);
      * ``ann_file=''``: a folder (``data_prefix['img_path']``) of images, each with a
        same-named ``.txt`` caption (``000001.jpg`` + ``000001.txt``, as LAION dumps come).

    Args:
        templates: prompt templates with one ``{}`` for the caption.
        routing_token: the answer (``'[GEN]'``).
        seed: picks each sample's template.
    """

    def __init__(self, *args, image_key: str = 'image', caption_key: str = 'caption',
                 templates: Sequence[str] = GEN_TEMPLATES, routing_token: str = '[GEN]',
                 seed: int = 0, task: str = 'gen', **kwargs) -> None:
        self.image_key, self.caption_key = image_key, caption_key
        self.templates, self.routing_token, self.seed = tuple(templates), routing_token, seed
        super().__init__(*args, task=task, **kwargs)

    def _records(self) -> list[tuple[str, str, str]]:
        """(id, image path, caption) of every pair."""
        if self.ann_file:
            out = []
            for i, rec in enumerate(load_json_records(self.ann_file)):
                if not isinstance(rec, dict) or self.image_key not in rec \
                        or self.caption_key not in rec:
                    raise ValueError(f'{self.ann_file}: record {i} needs "{self.image_key}" and '
                                     f'"{self.caption_key}"')
                out.append((str(rec.get('id', i)), self.image_path(rec[self.image_key]),
                            str(rec[self.caption_key])))
            return out
        folder = self.data_prefix.get('img_path', '')
        if not osp.isdir(folder):
            raise FileNotFoundError(f'CaptionImageDataset: image folder not found: {folder}')
        out = []
        for name in sorted(os.listdir(folder)):
            stem, ext = osp.splitext(name)
            if ext.lower() not in IMAGE_EXTS:
                continue
            txt = osp.join(folder, stem + '.txt')
            if not osp.isfile(txt):
                raise FileNotFoundError(f'{osp.join(folder, name)} has no caption file {txt}')
            with open(txt) as f:
                out.append((stem, osp.join(folder, name), f.read().strip()))
        return out

    def load_data_list(self) -> list[dict]:
        infos = []
        for i, (sid, path, caption) in enumerate(self._records()):
            prompt = _pick(self.templates, i, self.seed).format(caption.rstrip('.'))
            infos.append(dict(sample_id=sid, img_path=None, target_path=path, caption=caption,
                              conversation=[{'from': 'human', 'value': prompt},
                                            {'from': 'gpt', 'value': self.routing_token}]))
        return infos


@DATASETS.register_module()
class InstructEditDataset(VLMBaseDataset):
    """InstructPix2Pix-style triplets: a JSONL or JSON list of
    ``{"source", "instruction", "target"}`` (paths relative to ``data_prefix['img_path']``;
    other keys such as ``edit_type`` are kept). The MLLM sees the source image.

    Args:
        keys: the record keys of (source, instruction, target).
        templates: prompt templates with one ``{}`` for the instruction.
        routing_token: the answer (``'[EDIT]'``).
    """

    def __init__(self, *args, keys: Sequence[str] = ('source', 'instruction', 'target'),
                 templates: Sequence[str] = EDIT_TEMPLATES, routing_token: str = '[EDIT]',
                 seed: int = 0, task: str = 'edit', **kwargs) -> None:
        self.keys = tuple(keys)
        self.templates, self.routing_token, self.seed = tuple(templates), routing_token, seed
        super().__init__(*args, task=task, **kwargs)

    def load_data_list(self) -> list[dict]:
        src_key, ins_key, tgt_key = self.keys
        infos = []
        for i, rec in enumerate(load_json_records(self.ann_file)):
            missing = [k for k in self.keys if not isinstance(rec, dict) or k not in rec]
            if missing:
                raise ValueError(f'{self.ann_file}: record {i} lacks {missing}')
            extra = {k: v for k, v in rec.items() if k not in self.keys and k != 'id'}
            instruction = str(rec[ins_key])
            prompt = _pick(self.templates, i, self.seed).format(instruction.rstrip('.'))
            source = self.image_path(rec[src_key])
            infos.append(dict(extra, sample_id=str(rec.get('id', i)), img_path=source,
                              source_path=source, target_path=self.image_path(rec[tgt_key]),
                              instruction=instruction,
                              conversation=[{'from': 'human', 'value': f'<image>\n{prompt}'},
                                            {'from': 'gpt', 'value': self.routing_token}]))
        return infos

