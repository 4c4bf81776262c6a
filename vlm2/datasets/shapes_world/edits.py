"""Instruction edits of a scene (InstructPix2Pix style): recolour, remove, add.

An edit returns the instruction and the edited scene; both scenes are rendered from
the same background, so source and target differ only where the edit says.
"""
from dataclasses import dataclass, replace

import numpy as np

from .language import indefinite, noun_phrase, referring_expressions
from .scene import Scene, full_mask, layout_ok, sample_shape, touching
from .vocab import (ADD_TEMPLATES, COLORS, MAX_SHAPES, POSITION_PHRASES, POSITIONS,
                    RECOLOR_TEMPLATES, REMOVE_TEMPLATES, SHAPES, SIZES)

EDIT_TYPES: tuple[str, ...] = ('recolor', 'remove', 'add')
_ADD_TRIES = 30


@dataclass(frozen=True)
class Edit:
    """An edit: its type, the instruction and the scene after it."""

    edit_type: str
    instruction: str
    target: Scene


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _describable(scene: Scene) -> list[tuple[int, str]]:
    """(index, preferred referring expression) of shapes that can be named."""
    out = []
    for i in range(len(scene.shapes)):
        exprs = referring_expressions(scene, i)
        if exprs:
            out.append((i, exprs[0]))
    return out


def recolor(scene: Scene, rng: np.random.Generator) -> Edit | None:
    """"make the red circle green"."""
    options = _describable(scene)
    if not options:
        return None
    i, obj = _pick(rng, options)
    old, masks = scene.shapes[i], scene.full_masks
    # a neighbour of the same colour would merge with the recoloured shape
    taken = {s.color for j, s in enumerate(scene.shapes)
             if j == i or touching(masks[i], masks[j])}
    colors = [c for c in COLORS if c not in taken]
    if not colors:
        return None
    color = _pick(rng, colors)
    shapes = list(scene.shapes)
    shapes[i] = replace(old, color=color)
    text = _pick(rng, RECOLOR_TEMPLATES).format(obj=obj, color=color)
    return Edit('recolor', text, scene.with_shapes(shapes))


def remove(scene: Scene, rng: np.random.Generator) -> Edit | None:
    """"remove the triangle"."""
    options = _describable(scene)
    if not options:
        return None
    i, obj = _pick(rng, options)
    shapes = scene.shapes[:i] + scene.shapes[i + 1:]
    text = _pick(rng, REMOVE_TEMPLATES).format(obj=obj)
    return Edit('remove', text, scene.with_shapes(shapes))


def add(scene: Scene, rng: np.random.Generator) -> Edit | None:
    """"add a blue square at the top left" (drawn on top, in the named grid cell)."""
    if len(scene.shapes) > MAX_SHAPES:
        return None
    kind, color = _pick(rng, SHAPES), _pick(rng, tuple(COLORS))
    size, cell = _pick(rng, SIZES), _pick(rng, POSITIONS)
    size_px = scene.image_size
    for _ in range(_ADD_TRIES):
        new = sample_shape(rng, size_px, kind=kind, color=color, size=size, cell=cell)
        if layout_ok(scene.shapes + [new], scene.full_masks + [full_mask(new, size_px)],
                     size_px):
            text = _pick(rng, ADD_TEMPLATES).format(
                a_obj=indefinite(noun_phrase(new, ('size', 'color', 'kind'))),
                where=POSITION_PHRASES[cell])
            return Edit('add', text, scene.with_shapes(scene.shapes + [new]))
    return None


EDITS = {'recolor': recolor, 'remove': remove, 'add': add}


def sample_edit(scene: Scene, rng: np.random.Generator) -> Edit | None:
    """One edit of a random type; other types are tried if it does not apply.

    Returns None only when no edit applies (counted as skipped by the caller).
    """
    first = int(rng.integers(len(EDIT_TYPES)))
    for k in range(len(EDIT_TYPES)):
        edit = EDITS[EDIT_TYPES[(first + k) % len(EDIT_TYPES)]](scene, rng)
        if edit is not None:
            return edit
    return None
