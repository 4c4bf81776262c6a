"""Image and packing transforms of the MLLM's own input (decoders bring their own)."""
import zlib
from typing import Optional, Sequence

import cv2
import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine.structures import BaseDataElement

from vlm2.registry import TRANSFORMS
from vlm2.structures import VLMDataSample
from .visual_prompts import PROMPT_KINDS, box_prompt, sample_prompt


@TRANSFORMS.register_module()
class LoadImageIfAny(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` for samples that may have no image (``img_path`` None)."""

    def transform(self, results: dict) -> Optional[dict]:
        if not results.get('img_path'):
            results['img'] = None
            return results
        return super().transform(results)


def sample_rng(sample_id: Optional[str], *seed: int) -> np.random.Generator:
    """A generator for one sample's random choices: fixed by (``seed``, crc32 of
    ``sample_id``) when a sample id is given, else drawn from NumPy's global generator, which
    MMEngine seeds per process and data-loader worker, so a seeded run repeats."""
    if sample_id is None:
        return np.random.default_rng(np.random.randint(2 ** 31))
    return np.random.default_rng([*seed, zlib.crc32(sample_id.encode())])


def closest_grid(width: int, height: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """The (cols, rows) grid of at most ``max_tiles`` tiles closest to the image's aspect
    ratio, preferring more tiles for large images (InternVL's rule)."""
    grids = sorted({(c, r) for n in range(1, max_tiles + 1) for c in range(1, n + 1)
                    for r in range(1, n + 1) if c * r <= max_tiles}, key=lambda g: g[0] * g[1])
    aspect = width / height
    best, best_diff = (1, 1), float('inf')
    for c, r in grids:
        diff = abs(aspect - c / r)
        if diff < best_diff or (diff == best_diff and width * height > 0.5 * tile * tile * c * r):
            best, best_diff = (c, r), diff
    return best


@TRANSFORMS.register_module()
class DynamicTiles(BaseTransform):
    """Dynamic resolution: up to ``max_tiles`` tiles plus a global thumbnail placed last.

    Reads ``img`` (BGR, as mmcv loads it) and writes ``tiles``: RGB uint8 (n, size, size, 3).
    With one tile there is no separate thumbnail.
    """

    def __init__(self, tile_size: int, max_tiles: int = 4, thumbnail: bool = True) -> None:
        self.tile_size = tile_size
        self.max_tiles = max_tiles
        self.thumbnail = thumbnail

    def transform(self, results: dict) -> dict:
        img = results.get('img')
        if img is None:
            results['tiles'] = None
            return results
        img = mmcv.bgr2rgb(img)
        h, w = img.shape[:2]
        s = self.tile_size
        cols, rows = closest_grid(w, h, self.max_tiles, s)
        big = mmcv.imresize(img, (cols * s, rows * s), backend='pillow')
        tiles = [big[r * s:(r + 1) * s, c * s:(c + 1) * s] for r in range(rows) for c in range(cols)]
        if self.thumbnail and len(tiles) > 1:
            tiles.append(mmcv.imresize(img, (s, s), backend='pillow'))
        results['tiles'] = np.stack(tiles)
        return results


@TRANSFORMS.register_module()
class PackVLMInputs(BaseTransform):
    """Packs ``tiles`` as ``inputs`` ((n, 3, H, W) uint8, or None) and a :class:`VLMDataSample`.

    Args:
        fields: data-info keys copied as data fields (e.g. ``gt_answers``).
        meta_keys: data-info keys copied as metainfo.
    """

    def __init__(self, fields: Sequence[str] = (),
                 meta_keys: Sequence[str] = ('sample_id', 'img_path', 'ann_file',
                                             'ori_shape')) -> None:
        self.fields = tuple(fields)
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        tiles = results.get('tiles')
        inputs = None if tiles is None else torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()
        sample = VLMDataSample(metainfo={k: results[k] for k in self.meta_keys if k in results})
        sample.conversation = list(results['conversation'])
        sample.task = results['task']
        for key in self.fields:
            if key in results:
                sample.set_field(results[key], key)
        return dict(inputs=inputs, data_samples=sample)


@TRANSFORMS.register_module()
class VisualPromptMasks(BaseTransform):
    """Turns the regions of a sample into prompt masks on its global tile.

    Reads ``regions``: a list of dicts, each with ``segmentation`` (COCO polygons or RLE) or
    ``bbox`` (x, y, w, h), plus ``height``/``width`` of the image; writes ``region_masks``
    (uint8 tensor (R, S, S)) and ``prompt_kinds``. A region with a mask gets a prompt of a
    kind drawn uniformly from ``kinds`` (training, from NumPy's per-worker seeded generator)
    or of ``kind`` (evaluation, seeded by the sample id); a region with only a box gets a
    box prompt. The masks follow the thumbnail: the whole image resized to S×S.

    Args:
        tile_size: the vision tower's input size S.
        kinds: prompt kinds to draw from in training.
        kind: a fixed kind (evaluation per prompt type); None draws.
    """

    def __init__(self, tile_size: int, kinds: Sequence[str] = PROMPT_KINDS,
                 kind: Optional[str] = None) -> None:
        for k in [*kinds, *([kind] if kind else [])]:
            if k not in PROMPT_KINDS:
                raise ValueError(f'VisualPromptMasks: unknown prompt kind {k!r}; '
                                 f'known: {PROMPT_KINDS}')
        self.tile_size = tile_size
        self.kinds = tuple(kinds)
        self.kind = kind

    def transform(self, results: dict) -> dict:
        h, w = results['height'], results['width']
        sid = str(results.get('sample_id', ''))
        rng = sample_rng(sid if self.kind else None)
        masks, kinds = [], []
        for region in results['regions']:
            where = f'{results.get("ann_file", "")} sample {sid} annotation ' \
                    f'{region.get("id", "?")}'
            if region.get('segmentation') is not None:
                mask = segmentation_to_mask(region['segmentation'], h, w, where)
                kind = self.kind or self.kinds[rng.integers(len(self.kinds))]
                prompt = sample_prompt(mask, kind, rng, where)
            else:
                x, y, bw, bh = region['bbox']
                kind, prompt = 'box', box_prompt((x, y, x + bw, y + bh), (h, w), where)
            s = self.tile_size
            small = cv2.resize(prompt.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
            masks.append(small > 0)
            kinds.append(kind)
        results['region_masks'] = torch.from_numpy(np.stack(masks).astype(np.uint8)) if masks \
            else torch.zeros((0, self.tile_size, self.tile_size), dtype=torch.uint8)
        results['prompt_kinds'] = kinds
        return results


def segmentation_to_mask(segm, height: int, width: int, where: str) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as an (H, W) uint8 mask."""
    from pycocotools import mask as mask_utils
    try:
        if isinstance(segm, list):
            rles = mask_utils.frPyObjects(segm, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segm.get('counts'), list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = segm
        mask = mask_utils.decode(rle)
    except Exception as e:
        raise ValueError(f'{where}: cannot decode its segmentation ({e})') from e
    if not mask.any():
        raise ValueError(f'{where}: its segmentation is empty')
    return mask


@TRANSFORMS.register_module()
class PackInstanceLabelMaps(BaseTransform):
    """Packs one tile as ``inputs`` and per-pixel attribute labels as the data sample.

    Reads ``tiles`` (one tile: the whole image, as :class:`DynamicTiles` with
    ``max_tiles=1`` makes it) and ``instances`` of :class:`InstanceAttributeDataset`; paints
    each instance's labels over its mask, in annotation order (later instances on top), then
    resizes the maps to the tile with nearest neighbours. The sample's
    ``gt_label_maps`` is (attributes, S, S) int64, 0 where no instance is.
    """

    def transform(self, results: dict) -> dict:
        tiles = results['tiles']
        where = str(results.get('img_path'))
        if tiles is None or tiles.shape[0] != 1:
            raise ValueError(f'{where}: PackInstanceLabelMaps needs exactly one tile per image '
                             '(DynamicTiles with max_tiles=1)')
        h, w = results['height'], results['width']
        attributes = results['attributes']
        maps = np.zeros((len(attributes), h, w), np.int64)
        for inst in results['instances']:
            mask = segmentation_to_mask(inst['segmentation'], h, w,
                                        f'{where} annotation {inst["id"]}').astype(bool)
            maps[:, mask] = np.asarray(inst['labels'])[:, None]
        s = tiles.shape[1]
        maps = np.stack([cv2.resize(m.astype(np.int32), (s, s), interpolation=cv2.INTER_NEAREST)
                         for m in maps]).astype(np.int64)
        sample = BaseDataElement(metainfo=dict(sample_id=results.get('sample_id'),
                                               img_path=results.get('img_path'),
                                               attributes=tuple(attributes)))
        sample.gt_label_maps = torch.from_numpy(maps)
        return dict(inputs=torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous(),
                    data_samples=sample)
