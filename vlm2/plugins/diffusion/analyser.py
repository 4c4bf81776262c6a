"""Reads a ShapesWorld picture back: which coloured shapes it shows, and where.

The generation and edit metrics score a generated image by what this analyser finds in it,
so it must be robust to the residual noise of a few-step sampler. It works in four steps:

1. a 3x3 median filter removes salt-and-pepper noise;
2. every pixel is assigned to the nearest of the palette colours and the background (the
   median colour of the border), a clustering with known centres; pixels farther than
   ``max_color_dist`` from all of them (noise, anti-aliased edges) are left unassigned;
3. connected components per colour below ``min_area`` (a fraction of the image) are noise;
4. each remaining blob's coverage (the pixel's position between the background and the
   blob's colour, so anti-aliased edges count by how much they are covered) is upsampled
   ``upsample`` times, and its kind is the shape template (rendered with the generator's
   own geometry, centred on the blob's centroid, sized to its area) with the highest IoU.

No library offers this (it is specific to ShapesWorld's palette and shapes); it uses
OpenCV's median filter and connected components.
"""
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import cv2
import numpy as np

from vlm2.datasets.shapes_world.scene import Shape, full_mask
from vlm2.datasets.shapes_world.vocab import COLORS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES

_PALETTE = np.array(list(COLORS.values()), np.float32)
_COLOR_NAMES = list(COLORS)


@dataclass(frozen=True)
class Blob:
    """One shape the analyser found: colour, kind, centroid (x, y) in [0, 1] and area."""

    color: str
    kind: str
    cx: float
    cy: float
    area: float  # fraction of the image
    iou: float  # of the best kind template

    @property
    def cell(self) -> str:
        """The 3x3 grid word of the centroid (ShapesWorld's position words)."""
        col, row = min(int(self.cx * 3), 2), min(int(self.cy * 3), 2)
        return POSITIONS[row * 3 + col]


@dataclass(frozen=True)
class Asked:
    """One object a caption or instruction asks for."""

    size: Optional[str]
    color: str
    kind: str
    position: Optional[str]


@lru_cache(maxsize=None)
def _unit_area(kind: str) -> float:
    """Area of a kind's template divided by radius squared (measured at radius 200 px)."""
    return float(full_mask(Shape(kind, 'red', 'large', 250.0, 250.0, 200.0), 500).sum()) / 200 ** 2


def _template(kind: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """The kind's mask with its own centroid at (cx, cy) pixels."""
    mask = full_mask(Shape(kind, 'red', 'large', cx, cy, r), size)
    if not mask.any():
        return mask
    ys, xs = np.nonzero(mask)
    dx, dy = cx - (xs.mean() + 0.5), cy - (ys.mean() + 0.5)
    return full_mask(Shape(kind, 'red', 'large', cx + dx, cy + dy, r), size)


def classify_kind(mask: np.ndarray) -> tuple[str, float]:
    """The kind whose template best overlaps ``mask`` (bool HxW), and that IoU."""
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    cx, cy, area = xs.mean() + 0.5, ys.mean() + 0.5, float(mask.sum())
    best, best_iou = SHAPES[0], -1.0
    for kind in SHAPES:
        r = math.sqrt(area / _unit_area(kind))
        tpl = _template(kind, cx, cy, r, size)
        iou = float((tpl & mask).sum()) / max(float((tpl | mask).sum()), 1.0)
        if iou > best_iou:
            best, best_iou = kind, iou
    return best, best_iou


def analyse_image(image: np.ndarray, min_area: float = 0.003, max_color_dist: float = 70.0,
                  upsample: int = 4) -> list[Blob]:
    """The coloured shapes in an RGB uint8 HxWx3 square image, largest first."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f'analyse_image expects a square RGB HxWx3 image, got {image.shape}')
    raw = np.ascontiguousarray(image, dtype=np.uint8)
    img = cv2.medianBlur(raw, 3).astype(np.float32)
    size = img.shape[0]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = np.median(border, axis=0)
    centres = np.concatenate([_PALETTE, background[None]])  # last: background
    dist = np.linalg.norm(img[:, :, None, :] - centres[None, None], axis=-1)
    label = dist.argmin(-1)
    label[dist.min(-1) > max_color_dist] = -1
    blobs = []
    for c, name in enumerate(_COLOR_NAMES):
        count, comps, stats, _ = cv2.connectedComponentsWithStats(
            (label == c).astype(np.uint8), connectivity=8)
        for k in range(1, count):
            area = stats[k, cv2.CC_STAT_AREA] / size ** 2
            if area < min_area:
                continue
            mask = comps == k
            cover = _coverage(raw.astype(np.float32), mask, centres[c], background, upsample)
            kind, iou = classify_kind(cover)
            ys, xs = np.nonzero(mask)
            blobs.append(Blob(name, kind, float(xs.mean() + 0.5) / size,
                              float(ys.mean() + 0.5) / size, float(area), iou))
    return sorted(blobs, key=lambda b: -b.area)


def _coverage(img: np.ndarray, core: np.ndarray, color: np.ndarray, background: np.ndarray,
              upsample: int) -> np.ndarray:
    """Bool mask, ``upsample`` times larger, of where the blob covers at least half a
    pixel: coverage is the projection of the pixel on the background→colour line, taken
    around the blob's core only."""
    near = cv2.dilate(core.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0
    axis = color - background
    alpha = ((img - background) @ axis) / max(float(axis @ axis), 1e-6)
    alpha = np.clip(alpha, 0, 1) * near
    size = img.shape[0] * upsample
    return cv2.resize(alpha.astype(np.float32), (size, size),
                      interpolation=cv2.INTER_LINEAR) > 0.5


# ---- what was asked ----------------------------------------------------------------------
_PLACE = {phrase: word for word, phrase in POSITION_PHRASES.items()}
_OBJECT = re.compile(
    r'(?:(?P<size>' + '|'.join(SIZES) + r')\s+)?(?P<color>' + '|'.join(COLORS) +
    r')\s+(?P<kind>' + '|'.join(SHAPES) + r')(?:\s+(?P<place>' +
    '|'.join(sorted(_PLACE, key=len, reverse=True)) + r'))?')


def parse_objects(text: str) -> list[Asked]:
    """The (size, colour, kind, position) objects a ShapesWorld caption names, in order."""
    return [Asked(m['size'], m['color'], m['kind'], _PLACE.get(m['place']) if m['place']
                  else None) for m in _OBJECT.finditer(text.lower())]


def _in_cell(blob: Blob, position: str, margin: float) -> bool:
    row, col = divmod(POSITIONS.index(position), 3)
    return (col / 3 - margin <= blob.cx <= (col + 1) / 3 + margin
            and row / 3 - margin <= blob.cy <= (row + 1) / 3 + margin)


def check_generation(blobs: Sequence[Blob], asked: Sequence[Asked],
                     margin: float = 0.1) -> dict:
    """Whether every asked object is drawn: its colour and kind, roughly at its place (the
    asked grid cell grown by ``margin`` of the image side). Each blob serves one object.

    Returns ``faithful`` (all asked objects found) and per-attribute hits over the asked
    objects: ``color`` (a blob of that colour), ``kind`` (and of that kind), ``place`` (and
    at that place); ``extra``: blobs left over.
    """
    free = list(blobs)
    hits = dict(color=0, kind=0, place=0)
    for obj in asked:
        same_color = [b for b in free if b.color == obj.color]
        same_kind = [b for b in same_color if b.kind == obj.kind]
        placed = [b for b in same_kind
                  if obj.position is None or _in_cell(b, obj.position, margin)]
        hits['color'] += bool(same_color)
        hits['kind'] += bool(same_kind)
        hits['place'] += bool(placed)
        if placed:
            free.remove(placed[0])
    return dict(faithful=bool(asked) and hits['place'] == len(asked), asked=len(asked),
                extra=len(free), **hits)


def check_edit(pred: Sequence[Blob], reference: Sequence[Blob], tol: float = 0.15,
               added: Optional[Asked] = None, margin: float = 0.1) -> dict:
    """Whether the edited image shows exactly the reference's shapes: the same colours and
    kinds, each within ``tol`` (fraction of the image side) of the reference centroid, and
    nothing more.

    ``added`` is the object an addition asks for ("add a red star at the top"). Its place in
    the reference is one draw within the asked grid cell that the instruction does not say,
    so it is checked as generation checks a caption's object: its colour and kind inside the
    cell grown by ``margin``. Every other shape keeps its place from the source, and is
    checked against the reference centroid.
    """
    reference = list(reference)
    new = None
    if added is not None and added.position is not None:
        drawn = [b for b in reference if b.color == added.color and b.kind == added.kind
                 and _in_cell(b, added.position, margin)]
        new = drawn[-1] if drawn else None  # drawn last, on top; absent when occluded
        if new is not None:
            reference.remove(new)
    free = list(pred)
    found = 0
    for ref in reference:
        match = [b for b in free if b.color == ref.color and b.kind == ref.kind
                 and math.hypot(b.cx - ref.cx, b.cy - ref.cy) <= tol]
        if match:
            found += 1
            free.remove(min(match, key=lambda b: math.hypot(b.cx - ref.cx, b.cy - ref.cy)))
    if new is not None:
        match = [b for b in free if b.color == new.color and b.kind == new.kind
                 and _in_cell(b, added.position, margin)]
        if match:
            found += 1
            free.remove(match[0])
    expected = len(reference) + (new is not None)
    return dict(correct=found == expected and not free, found=found, expected=expected,
                extra=len(free))
