"""Text about a scene: captions, referring expressions and question/answer pairs.

Everything is derived from the scene's attributes, so answers are correct by
construction, and only words from ``vocab`` are used. Referring expressions are
unambiguous: each picks out exactly one instance of the image.
"""
from collections.abc import Callable, Sequence

import numpy as np

from .scene import Scene, Shape
from .vocab import (CAPTION_TEMPLATES, COLOR_TEMPLATES, COLORS, COUNT_TEMPLATES,
                    EXIST_TEMPLATES, NO, PLURALS, POSITION_PHRASES, POSITION_TEMPLATES,
                    POSITIONS, RELATIONS, SHAPES, SIZES, YES)

#: Attribute combinations tried for attribute-only descriptions, most natural first.
_DESCRIPTIONS: tuple[tuple[str, ...], ...] = (
    ('color', 'kind'), ('size', 'color', 'kind'), ('kind',), ('size', 'kind'))
#: A relation holds when centres differ by this fraction of the image side.
RELATION_MARGIN = 0.08
QA = tuple[str, str]  # (question, answer)


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def indefinite(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front."""
    return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def noun_phrase(shape: Shape, attrs: Sequence[str]) -> str:
    """Words of ``attrs`` (size, color, kind; always in that order) for ``shape``."""
    return ' '.join(getattr(shape, a) for a in ('size', 'color', 'kind') if a in attrs)


def _same(a: Shape, b: Shape, attrs: Sequence[str]) -> bool:
    return all(getattr(a, x) == getattr(b, x) for x in attrs)


def unique_descriptions(scene: Scene, index: int) -> list[tuple[str, ...]]:
    """Attribute combinations that single out shape ``index`` in the scene."""
    me = scene.shapes[index]
    return [attrs for attrs in _DESCRIPTIONS
            if sum(_same(me, s, attrs) for s in scene.shapes) == 1]


def caption(scene: Scene) -> str:
    """Canonical caption: every shape with size, colour, kind and position, in
    reading order of the grid cells ("a large red circle at the top left and ...")."""
    order = sorted(range(len(scene.shapes)), key=lambda i: (
        POSITIONS.index(scene.position(i)), scene.shapes[i].cx, scene.shapes[i].cy, i))
    items = [indefinite(noun_phrase(scene.shapes[i], ('size', 'color', 'kind')))
             + ' ' + POSITION_PHRASES[scene.position(i)] for i in order]
    if len(items) == 1:
        return items[0]
    return ', '.join(items[:-1]) + ' and ' + items[-1]


def _relation(a: Shape, b: Shape, relation: str, margin: float) -> bool:
    """Whether ``a`` is ``relation`` ``b`` (centres at least ``margin`` apart)."""
    if relation == 'left of':
        return a.cx + margin < b.cx
    if relation == 'right of':
        return a.cx > b.cx + margin
    if relation == 'above':
        return a.cy + margin < b.cy
    if relation == 'below':
        return a.cy > b.cy + margin
    raise ValueError(f'unknown relation {relation!r}; expected one of {RELATIONS}')


def referring_expressions(scene: Scene, index: int) -> list[str]:
    """All unambiguous expressions for shape ``index``, the preferred one first.

    Preference: colour + kind, then with size, then with position, then a relation to
    another uniquely described shape; bare kind / size + kind come last as variants.
    Returns an empty list when no expression singles the shape out.
    """
    shapes, me = scene.shapes, scene.shapes[index]
    unique = unique_descriptions(scene, index)
    exprs = ['the ' + noun_phrase(me, attrs) for attrs in unique
             if attrs in _DESCRIPTIONS[:2]]
    group = [k for k, s in enumerate(shapes) if _same(me, s, ('color', 'kind'))]
    base = 'the ' + noun_phrase(me, ('color', 'kind'))
    if len(group) > 1:
        pos = scene.position(index)
        if all(scene.position(k) != pos for k in group if k != index):
            exprs.append(f'{base} {POSITION_PHRASES[pos]}')
        margin = RELATION_MARGIN * scene.image_size
        for j, anchor in enumerate(shapes):
            anchor_desc = unique_descriptions(scene, j)
            if j in group or not anchor_desc:
                continue
            anchor_phrase = 'the ' + noun_phrase(anchor, anchor_desc[0])
            for rel in RELATIONS:
                if _relation(me, anchor, rel, margin) and not any(
                        _relation(shapes[k], anchor, rel, 0) for k in group if k != index):
                    exprs.append(f'{base} {rel} {anchor_phrase}')
    exprs += ['the ' + noun_phrase(me, attrs) for attrs in unique
              if attrs not in _DESCRIPTIONS[:2]]
    return exprs


# ----------------------------------------------------------------- questions
def count_question(scene: Scene, rng: np.random.Generator) -> QA:
    """"How many ... are there?" about all shapes, a kind, a colour or both."""
    family = _choice(rng, tuple(COUNT_TEMPLATES))
    present = scene.shapes
    # mostly ask about something present, sometimes about anything (answer may be 0)
    ref = _choice(rng, present) if rng.random() < 0.8 else None
    kind = ref.kind if ref else _choice(rng, SHAPES)
    color = ref.color if ref else _choice(rng, tuple(COLORS))
    use_kind, use_color = family in ('kind', 'color_kind'), family in ('color', 'color_kind')
    n = sum((not use_kind or s.kind == kind) and (not use_color or s.color == color)
            for s in present)
    question = _choice(rng, COUNT_TEMPLATES[family]).format(shapes=PLURALS[kind], color=color)
    return question, str(n)


def color_question(scene: Scene, rng: np.random.Generator) -> QA | None:
    """"What color is the triangle?" for a shape describable without its colour."""
    options = [(i, attrs) for i in range(len(scene.shapes))
               for attrs in unique_descriptions(scene, i) if 'color' not in attrs]
    if not options:
        return None
    i, attrs = _choice(rng, options)
    obj = 'the ' + noun_phrase(scene.shapes[i], attrs)
    return _choice(rng, COLOR_TEMPLATES).format(obj=obj), scene.shapes[i].color


def position_question(scene: Scene, rng: np.random.Generator) -> QA | None:
    """"Where is the blue square?" answered with a grid word."""
    options = [(i, attrs) for i in range(len(scene.shapes))
               for attrs in unique_descriptions(scene, i)]
    if not options:
        return None
    i, attrs = _choice(rng, options)
    obj = 'the ' + noun_phrase(scene.shapes[i], attrs)
    return _choice(rng, POSITION_TEMPLATES).format(obj=obj), scene.position(i)


def exist_question(scene: Scene, rng: np.random.Generator) -> QA:
    """"Is there a green star?"; "yes" and "no" are equally likely."""
    attrs = _choice(rng, (('color', 'kind'), ('color', 'kind'), ('size', 'color', 'kind'),
                          ('kind',)))
    if rng.random() < 0.5:
        probe, answer = _choice(rng, scene.shapes), YES
    else:
        answer = NO
        for _ in range(100):
            probe = Shape(_choice(rng, SHAPES), _choice(rng, tuple(COLORS)),
                          _choice(rng, SIZES), 0.0, 0.0, 0.0)
            if not any(_same(probe, s, attrs) for s in scene.shapes):
                break
        else:  # cannot happen with fewer shapes than kinds; fail loudly if it does
            raise RuntimeError(f'no absent {attrs} combination in {scene.shapes}')
    a_obj = indefinite(noun_phrase(probe, attrs))
    return _choice(rng, EXIST_TEMPLATES).format(a_obj=a_obj), answer


def caption_question(scene: Scene, rng: np.random.Generator) -> QA:
    """"Describe the image." answered with the canonical caption."""
    return _choice(rng, CAPTION_TEMPLATES), caption(scene)


#: Question families by ``question_type``; each returns (question, answer) or None.
QUESTION_FAMILIES: dict[str, Callable[[Scene, np.random.Generator], QA | None]] = {
    'count': count_question, 'color': color_question, 'position': position_question,
    'exist': exist_question, 'caption': caption_question}


def conversation(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """3-5 distinct short QA turns, then a caption turn half of the time.

    Returns (question_type, question, answer) triples.
    """
    wanted = int(rng.integers(3, 6))
    families = ('count', 'color', 'position', 'exist')
    turns: list[tuple[str, str, str]] = []
    for _ in range(wanted * 10):
        if len(turns) == wanted:
            break
        family = _choice(rng, families)
        qa = QUESTION_FAMILIES[family](scene, rng)
        if qa is not None and all(qa[0] != t[1] for t in turns):
            turns.append((family, *qa))
    if rng.random() < 0.5:
        turns.append(('caption', *caption_question(scene, rng)))
    return turns


def evaluation_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """One question of every family that applies to the scene, for validation."""
    out = []
    for family, make in QUESTION_FAMILIES.items():
        qa = make(scene, rng)
        if qa is not None:
            out.append((family, *qa))
    return out
