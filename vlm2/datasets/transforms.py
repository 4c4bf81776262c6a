"""Image and packing transforms of the MLLM's own input (decoders bring their own)."""
from typing import Optional, Sequence

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform, LoadImageFromFile

from vlm2.registry import TRANSFORMS
from vlm2.structures import VLMDataSample


@TRANSFORMS.register_module()
class LoadImageIfAny(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` for samples that may have no image (``img_path`` None)."""

    def transform(self, results: dict) -> Optional[dict]:
        if not results.get('img_path'):
            results['img'] = None
            return results
        return super().transform(results)


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
