"""Scenes of ShapesWorld: sampling, geometry, rasterisation and visible masks.

Polygons are rasterised with ``pycocotools`` (the same routine that decodes COCO polygon
annotations) and circles analytically, and the image is painted from those very masks.
So the picture, the visible masks and the written polygons/RLEs agree pixel for pixel.
Later shapes occlude earlier ones.
"""
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from pycocotools import mask as mask_utils

from .vocab import COLORS, MAX_SHAPES, POSITIONS, SHAPES, SIZES

#: Every instance keeps at least this fraction of its own area visible.
MIN_VISIBLE = 0.5
#: Diameter ranges as fractions of the image side (18-28 px / 32-48 px at 128 px).
DIAMETERS: dict[str, tuple[float, float]] = {
    'small': (0.14, 0.22), 'large': (0.25, 0.375)}
#: Probability that a new shape copies the kind / colour of an earlier one, so that
#: counts above one and ambiguous descriptions (needing size/position) occur.
COPY_PROB = 0.3
_MAX_TRIES = 30


@dataclass(frozen=True)
class Shape:
    """One shape instance: kind, colour and size words, centre and radius in pixels."""

    kind: str
    color: str
    size: str
    cx: float
    cy: float
    radius: float


@dataclass
class Scene:
    """A square image: background colour and shapes in drawing order."""

    image_size: int
    background: tuple[int, int, int]
    shapes: list[Shape] = field(default_factory=list)

    @cached_property
    def full_masks(self) -> list[np.ndarray]:
        """Each shape's whole (unoccluded) mask, bool HxW."""
        return [full_mask(s, self.image_size) for s in self.shapes]

    @cached_property
    def labels(self) -> np.ndarray:
        """HxW map of the topmost shape index per pixel (-1 = background)."""
        return label_map(self.full_masks, self.image_size)

    @property
    def visible_masks(self) -> list[np.ndarray]:
        """Each shape's visible mask (what the image shows of it), bool HxW."""
        return [self.labels == i for i in range(len(self.shapes))]

    def occluded(self, index: int) -> bool:
        """Whether any later shape covers part of shape ``index``."""
        mine = self.full_masks[index]
        return any((mine & m).any() for m in self.full_masks[index + 1:])

    def position(self, index: int) -> str:
        """Grid word of shape ``index``'s centre (see ``vocab.POSITIONS``)."""
        return position_word(self.shapes[index], self.image_size)

    def render(self) -> np.ndarray:
        """RGB uint8 HxWx3 picture of the scene."""
        s = self.image_size
        image = np.empty((s, s, 3), np.uint8)
        image[:] = self.background
        for shape, mask in zip(self.shapes, self.full_masks):
            image[mask] = COLORS[shape.color]
        return image

    def with_shapes(self, shapes: list[Shape]) -> 'Scene':
        """A copy of this scene (same background) with other shapes."""
        return replace(self, shapes=list(shapes))


def position_word(shape: Shape, image_size: int) -> str:
    """3x3 grid word of the shape's centre."""
    col = min(int(shape.cx * 3 / image_size), 2)
    row = min(int(shape.cy * 3 / image_size), 2)
    return POSITIONS[row * 3 + col]


def outline(shape: Shape) -> list[tuple[float, float]] | None:
    """Polygon vertices (rounded to 0.01 px) clockwise on screen; None for circles.

    Vertex orders are fixed so keypoints.py can name them.
    """
    cx, cy, r = shape.cx, shape.cy, shape.radius
    if shape.kind == 'circle':
        return None
    if shape.kind == 'square':
        h = 0.8 * r
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    elif shape.kind == 'triangle':  # equilateral, pointing up, box-centred
        big = 1.1 * r
        half_w, half_h = big * math.sqrt(3) / 2, 0.75 * big
        pts = [(cx, cy - half_h), (cx + half_w, cy + half_h), (cx - half_w, cy + half_h)]
    elif shape.kind == 'star':  # 5 tips from the top, clockwise, alternating with inner
        dy = 0.5 * r * (1 - math.cos(math.pi / 5))  # centre the box vertically
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy + dy + rad * math.sin(a)))
    elif shape.kind == 'hexagon':  # pointy top
        pts = [(cx + r * math.cos(math.radians(-90 + 60 * k)),
                cy + r * math.sin(math.radians(-90 + 60 * k))) for k in range(6)]
    else:
        raise ValueError(f'unknown shape kind {shape.kind!r}; expected one of {SHAPES}')
    return [(round(x, 2), round(y, 2)) for x, y in pts]


def polygon_segmentation(shape: Shape) -> list[list[float]]:
    """COCO polygon segmentation ``[[x1, y1, x2, y2, ...]]`` of a polygonal shape."""
    pts = outline(shape)
    if pts is None:
        raise ValueError(f'{shape.kind} has no polygon outline')
    return [[v for xy in pts for v in xy]]


def full_mask(shape: Shape, image_size: int) -> np.ndarray:
    """Bool HxW mask of the whole shape (polygons rasterised as COCO decodes them)."""
    s = image_size
    if shape.kind == 'circle':
        coords = np.arange(s) + 0.5
        d2 = (coords[None, :] - shape.cx) ** 2 + (coords[:, None] - shape.cy) ** 2
        return d2 <= shape.radius ** 2
    rles = mask_utils.frPyObjects(polygon_segmentation(shape), s, s)
    return mask_utils.decode(rles)[..., 0].astype(bool)


def label_map(masks: list[np.ndarray], image_size: int) -> np.ndarray:
    """Topmost index per pixel when ``masks`` are painted in order (-1 = none)."""
    labels = np.full((image_size, image_size), -1, np.int16)
    for i, m in enumerate(masks):
        labels[m] = i
    return labels


def dilate(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one pixel in all 8 directions."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def touching(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two masks overlap or are 8-adjacent."""
    return bool((dilate(a) & b).any())


def layout_ok(shapes: Sequence[Shape], masks: list[np.ndarray], image_size: int) -> bool:
    """True when, painting ``shapes`` in order, every one keeps ``MIN_VISIBLE`` of its
    area and no two shapes of the same colour touch (they would merge in the picture)."""
    labels = label_map(masks, image_size)
    if any((labels == i).sum() < MIN_VISIBLE * m.sum() for i, m in enumerate(masks)):
        return False
    return not any(shapes[i].color == shapes[j].color and touching(masks[i], masks[j])
                   for i in range(len(shapes)) for j in range(i + 1, len(shapes)))


def sample_shape(rng: np.random.Generator, image_size: int,
                 previous: Sequence[Shape] = (), kind: str | None = None,
                 color: str | None = None, size: str | None = None,
                 cell: str | None = None) -> Shape:
    """Sample one shape fully inside the image; given attributes are kept as is.

    ``cell`` restricts the centre to that grid cell (used by "add ... at the top").
    """
    colors = tuple(COLORS)
    if kind is None:
        kind = (previous[rng.integers(len(previous))].kind
                if previous and rng.random() < COPY_PROB
                else SHAPES[rng.integers(len(SHAPES))])
    if color is None:
        color = (previous[rng.integers(len(previous))].color
                 if previous and rng.random() < COPY_PROB
                 else colors[rng.integers(len(colors))])
    if size is None:
        size = SIZES[rng.integers(len(SIZES))]
    lo, hi = DIAMETERS[size]
    radius = rng.uniform(lo, hi) * image_size / 2
    low, high = radius + 1, image_size - radius - 1
    if cell is None:
        cx, cy = rng.uniform(low, high, size=2)
    else:
        row, col = divmod(POSITIONS.index(cell), 3)
        third = image_size / 3
        # centre inside the cell (minus a hair) and the shape inside the image
        cx = rng.uniform(max(low, col * third), min(high, (col + 1) * third - 0.01))
        cy = rng.uniform(max(low, row * third), min(high, (row + 1) * third - 0.01))
    return Shape(kind, color, size, round(float(cx), 2), round(float(cy), 2),
                 round(float(radius), 2))


def sample_scene(rng: np.random.Generator, image_size: int,
                 max_shapes: int = MAX_SHAPES) -> Scene:
    """Sample a scene of 1-``max_shapes`` shapes that passes ``layout_ok``.

    Shapes that do not fit after a few tries are dropped, so the count may be lower
    than first drawn (never below one).
    """
    grey = int(rng.integers(228, 250))
    scene = Scene(image_size, (grey, grey, grey))
    target = int(rng.integers(1, max_shapes + 1))
    shapes: list[Shape] = []
    masks: list[np.ndarray] = []
    for _ in range(target * _MAX_TRIES):
        if len(shapes) == target:
            break
        shape = sample_shape(rng, image_size, shapes)
        mask = full_mask(shape, image_size)
        if layout_ok(shapes + [shape], masks + [mask], image_size):
            shapes.append(shape)
            masks.append(mask)
    return scene.with_shapes(shapes)
