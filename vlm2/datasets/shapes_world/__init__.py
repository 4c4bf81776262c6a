"""ShapesWorld: the embedded, procedurally generated data set that exercises every task.

Scenes of 1-4 coloured shapes with ground truth in the formats of real data sets
(COCO instances/keypoints, RefCOCO, LLaVA, caption pairs, InstructPix2Pix triplets).
Run ``tools/data/make_shapes_world.py`` or call :func:`generate_shapes_world`.
"""
from .generate import generate_shapes_world
from .vocab import COLORS, SHAPES, WORDS

__all__ = ['generate_shapes_world', 'WORDS', 'SHAPES', 'COLORS']
