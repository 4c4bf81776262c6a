"""Visual prompts (point, box, scribble, circle, polygon, mask) as binary masks.

Training draws a prompt shape uniformly and derives it from an instance mask with a seeded
generator, as the paper does; every prompt becomes a mask at the vision tower's input size.
"""
from typing import Optional

import cv2
import numpy as np
from scipy import ndimage

PROMPT_KINDS = ('point', 'box', 'scribble', 'circle', 'polygon', 'mask')


def _check(mask: np.ndarray, where: str) -> np.ndarray:
    mask = np.asarray(mask) > 0
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f'{where}: a visual prompt needs a non-empty 2-D instance mask')
    return mask


def box_prompt(box_xyxy, size: tuple[int, int], where: str = 'prompt') -> np.ndarray:
    """A filled box; a box outside the image, or of no area inside it, is an error."""
    h, w = size
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        raise ValueError(f'{where}: box {list(box_xyxy)} lies outside the {w}x{h} image')
    out = np.zeros((h, w), np.uint8)
    out[int(cy1):int(np.ceil(cy2)), int(cx1):int(np.ceil(cx2))] = 1
    return out


def sample_prompt(mask: np.ndarray, kind: str, rng: np.random.Generator,
                  where: str = 'prompt') -> np.ndarray:
    """A prompt of ``kind`` derived from an instance ``mask`` (H, W), as a uint8 mask.

    point: a disk around a point inside the mask; box: its bounding box; scribble: a stroke
    through points on the mask's skeleton (ridge of the distance transform); circle: the
    circle around it; polygon: its convex hull; mask: the mask itself.
    """
    mask = _check(mask, where)
    h, w = mask.shape
    radius = max(1, round(min(h, w) / 64))
    out = np.zeros((h, w), np.uint8)
    ys, xs = np.nonzero(mask)
    if kind == 'mask':
        out[mask] = 1
    elif kind == 'box':
        out = box_prompt((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), (h, w), where)
    elif kind == 'point':
        dist = ndimage.distance_transform_edt(mask)
        inner = np.argwhere(dist >= max(1, dist.max() / 2))  # away from the border
        y, x = inner[rng.integers(len(inner))]
        cv2.circle(out, (int(x), int(y)), radius + 1, 1, -1)
    elif kind == 'scribble':
        dist = ndimage.distance_transform_edt(mask)
        ridge = (dist == ndimage.maximum_filter(dist, size=3)) & mask
        pts = np.argwhere(ridge)[:, ::-1]
        pts = pts[rng.choice(len(pts), size=min(len(pts), 4), replace=False)]
        order = np.argsort(pts @ np.array([1.0, 0.37]))  # along one direction
        cv2.polylines(out, [pts[order].astype(np.int32).reshape(-1, 1, 2)], False, 1,
                      thickness=radius)
        out &= mask.astype(np.uint8)
        if not out.any():
            out[ys[len(ys) // 2], xs[len(xs) // 2]] = 1
    elif kind == 'circle':
        (cx, cy), r = cv2.minEnclosingCircle(np.stack([xs, ys], 1).astype(np.float32))
        cv2.circle(out, (round(cx), round(cy)), max(1, round(r)), 1, thickness=radius)
    elif kind == 'polygon':
        hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
        cv2.fillPoly(out, [hull], 1)
    else:
        raise ValueError(f'{where}: unknown prompt kind {kind!r}; known: {PROMPT_KINDS}')
    return out


def random_prompt(mask: np.ndarray, rng: np.random.Generator,
                  kinds: Optional[tuple[str, ...]] = None,
                  where: str = 'prompt') -> tuple[str, np.ndarray]:
    """A prompt of a kind drawn uniformly from ``kinds`` (default: all six)."""
    kinds = kinds or PROMPT_KINDS
    kind = kinds[rng.integers(len(kinds))]
    return kind, sample_prompt(mask, kind, rng, where)
