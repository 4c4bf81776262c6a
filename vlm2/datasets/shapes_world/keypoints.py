"""Named keypoints and skeletons per shape kind, in COCO keypoint conventions.

Kinds have different numbers of keypoints on purpose (variable-length keypoint sets).
Visibility follows COCO: 2 visible, 1 labelled but occluded by a later shape,
0 outside the image (coordinates then written as 0, 0).
"""
import math

import numpy as np

from .scene import Scene, Shape, outline
from .vocab import KEYPOINT_NAMES


def _ring_with_center(n: int) -> list[list[int]]:
    ring = [[i, i % n + 1] for i in range(1, n + 1)]
    return ring + [[n + 1, i] for i in range(1, n + 1)]


#: 1-based skeleton links per kind: the outline ring, plus spokes from the centre.
SKELETONS: dict[str, list[list[int]]] = {
    'circle': _ring_with_center(4),
    'square': _ring_with_center(4),
    'triangle': [[1, 2], [2, 3], [3, 1]],
    'star': [[1, 2], [2, 3], [3, 4], [4, 5], [5, 1]],
    'hexagon': _ring_with_center(6),
}
#: A keypoint counts as visible if a pixel of its own visible mask lies this close.
_WINDOW = 2


def keypoint_coords(shape: Shape) -> list[tuple[float, float]]:
    """(x, y) of each named keypoint, in ``KEYPOINT_NAMES[shape.kind]`` order."""
    cx, cy, r = shape.cx, shape.cy, shape.radius
    if shape.kind == 'circle':
        pts = [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy), (cx, cy)]
    else:
        pts = outline(shape)
        if shape.kind == 'star':
            pts = pts[0::2]  # outer tips only
        elif shape.kind == 'triangle':
            pts = [pts[0], pts[2], pts[1]]  # top, bottom left, bottom right
        if KEYPOINT_NAMES[shape.kind][-1] == 'center':
            pts = pts + [(cx, cy)]
    if len(pts) != len(KEYPOINT_NAMES[shape.kind]):
        raise AssertionError(f'{shape.kind}: {len(pts)} points for '
                             f'{len(KEYPOINT_NAMES[shape.kind])} keypoint names')
    return [(round(x, 2), round(y, 2)) for x, y in pts]


def keypoint_annotation(scene: Scene, index: int) -> tuple[list[float], int]:
    """COCO ``keypoints`` list ``[x, y, v] * K`` and ``num_keypoints`` of one shape."""
    labels = scene.labels
    size = scene.image_size
    flat: list[float] = []
    for x, y in keypoint_coords(scene.shapes[index]):
        if not (0 <= x <= size and 0 <= y <= size):
            flat += [0, 0, 0]
            continue
        col, row = min(math.floor(x), size - 1), min(math.floor(y), size - 1)
        window = labels[max(row - _WINDOW, 0):row + _WINDOW + 1,
                        max(col - _WINDOW, 0):col + _WINDOW + 1]
        if labels[row, col] == index:
            v = 2
        elif labels[row, col] > index:
            v = 1  # the pixel under the keypoint shows a later shape
        else:  # on a thin tip the exact pixel may be unfilled: look around it
            v = 1 if (window > index).any() and not (window == index).any() else 2
        flat += [x, y, v]
    num = int(np.count_nonzero(np.asarray(flat[2::3]) > 0))
    return flat, num
