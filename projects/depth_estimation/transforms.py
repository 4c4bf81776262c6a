"""Pipeline steps that give the depth decoder its own image and its target depth map."""
import os.path as osp

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from vlm2.registry import TRANSFORMS


def read_depth(path: str, depth_scale: float) -> np.ndarray:
    """A depth map in metres, float32 (H, W): a 16-bit PNG divided by ``depth_scale``
    (1000 for NYU's millimetres, 256 for KITTI) or a ``.npy`` array in metres. 0 means no
    depth (KITTI's sparse ground truth)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'depth file not found: {path}')
    if path.endswith('.npy'):
        depth = np.load(path).astype(np.float32)
    else:
        raw = mmcv.imread(path, flag='unchanged', backend='pillow')
        if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
            raise ValueError(f'{path}: expected a single-channel 16-bit PNG, got '
                             f'{None if raw is None else (raw.dtype, raw.shape)}')
        depth = raw.astype(np.float32) / depth_scale
    if depth.ndim != 2:
        raise ValueError(f'{path}: expected an (H, W) depth map, got shape {depth.shape}')
    return depth


@TRANSFORMS.register_module()
class LoadDepthInputs(BaseTransform):
    """Reads ``img`` (BGR, from ``LoadImageIfAny``) and ``depth_path``; writes
    ``depth_image`` (RGB uint8, (size, size, 3): the decoder's own image) and ``gt_depth``
    (float32 metres at the image's resolution), when the sample has a depth file.

    Args:
        size: side of the decoder's square image.
    """

    def __init__(self, size: int = 128) -> None:
        self.size = size

    def transform(self, results: dict) -> dict:
        img = results.get('img')
        if img is None:
            raise ValueError('LoadDepthInputs needs an image (put LoadImageIfAny first)')
        results['depth_image'] = mmcv.imresize(mmcv.bgr2rgb(img), (self.size, self.size),
                                               backend='pillow')
        if results.get('depth_path'):
            depth = read_depth(results['depth_path'], results.get('depth_scale', 1000.0))
            if depth.shape != img.shape[:2]:
                raise ValueError(f'{results["depth_path"]}: depth {depth.shape} does not match '
                                 f'image {results.get("img_path")} {img.shape[:2]}')
            results['gt_depth'] = depth
        return results
