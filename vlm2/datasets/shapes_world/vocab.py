"""The fixed lexicon of ShapesWorld: attribute words, templates and the word list.

Every text the generator writes is built only from the strings in this module, so
``WORDS`` (computed from them) is a closed vocabulary: the tiny model's word-level
tokenizer is built from it and a test checks that every generated text is covered.
"""
import re

#: Shape kinds, in category order.
SHAPES: tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'hexagon')
#: Non-contiguous COCO category ids (real data sets have gaps too).
CATEGORY_IDS: dict[str, int] = {
    'circle': 1, 'square': 3, 'triangle': 5, 'star': 7, 'hexagon': 9}
PLURALS: dict[str, str] = {kind: kind + 's' for kind in SHAPES}
SUPERCATEGORY = 'shape'

#: Colour names and their RGB values (clearly distinct on a light background).
COLORS: dict[str, tuple[int, int, int]] = {
    'red': (215, 40, 40),
    'green': (40, 160, 60),
    'blue': (40, 80, 220),
    'yellow': (235, 195, 20),
    'purple': (140, 60, 180),
    'orange': (245, 125, 20),
}
SIZES: tuple[str, ...] = ('small', 'large')

#: 3x3 grid words, row-major (row 0 = top, column 0 = left).
POSITIONS: tuple[str, ...] = (
    'top left', 'top', 'top right',
    'left', 'center', 'right',
    'bottom left', 'bottom', 'bottom right')
#: How a position word reads after a noun ("a red circle at the top left").
POSITION_PHRASES: dict[str, str] = {
    'top left': 'at the top left', 'top': 'at the top',
    'top right': 'at the top right', 'left': 'on the left',
    'center': 'in the center', 'right': 'on the right',
    'bottom left': 'at the bottom left', 'bottom': 'at the bottom',
    'bottom right': 'at the bottom right'}
#: Spatial relations used in referring expressions ("... left of the blue square").
RELATIONS: tuple[str, ...] = ('left of', 'right of', 'above', 'below')

MAX_SHAPES = 4
#: Count answers are digits; "add" edits can make one more shape than MAX_SHAPES.
NUMBERS: tuple[str, ...] = tuple(str(i) for i in range(MAX_SHAPES + 2))
YES, NO = 'yes', 'no'
ARTICLES: tuple[str, ...] = ('a', 'an', 'the')

#: Named keypoints per shape kind (geometry lives in keypoints.py).
KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    'circle': ('top', 'right', 'bottom', 'left', 'center'),
    'square': ('top left corner', 'top right corner', 'bottom right corner',
               'bottom left corner', 'center'),
    'triangle': ('top tip', 'bottom left tip', 'bottom right tip'),
    'star': ('top tip', 'upper right tip', 'lower right tip', 'lower left tip',
             'upper left tip'),
    'hexagon': ('top corner', 'upper right corner', 'lower right corner',
                'bottom corner', 'lower left corner', 'upper left corner',
                'center'),
}

# Question templates. Placeholders: {shapes} plural kind, {color}, {obj} a definite
# noun phrase ("the red circle"), {a_obj} an indefinite one ("an orange star").
COUNT_TEMPLATES: dict[str, tuple[str, ...]] = {
    'all': ('How many shapes are there?', 'How many objects are in the image?'),
    'kind': ('How many {shapes} are there?', 'How many {shapes} are in the image?',
             'Count the {shapes}.'),
    'color': ('How many {color} shapes are there?',
              'How many {color} objects are in the image?'),
    'color_kind': ('How many {color} {shapes} are there?',
                   'How many {color} {shapes} can you see?'),
}
COLOR_TEMPLATES: tuple[str, ...] = (
    'What color is {obj}?', 'What is the color of {obj}?',
    'Which color does {obj} have?')
POSITION_TEMPLATES: tuple[str, ...] = (
    'Where is {obj}?', 'Where is {obj} located?',
    'In which part of the image is {obj}?')
EXIST_TEMPLATES: tuple[str, ...] = (
    'Is there {a_obj}?', 'Is there {a_obj} in the image?',
    'Does the image contain {a_obj}?')
CAPTION_TEMPLATES: tuple[str, ...] = (
    'Describe the image.', 'Write a short caption.', 'What is in the image?',
    'Describe the image briefly.', 'Give a short description of the image.')

# Edit instructions. {obj} definite phrase, {color} new colour, {a_obj} new shape,
# {where} a position phrase.
RECOLOR_TEMPLATES: tuple[str, ...] = (
    'make {obj} {color}', 'turn {obj} {color}',
    'change the color of {obj} to {color}')
REMOVE_TEMPLATES: tuple[str, ...] = (
    'remove {obj}', 'delete {obj}', 'take away {obj}')
ADD_TEMPLATES: tuple[str, ...] = (
    'add {a_obj} {where}', 'put {a_obj} {where}', 'draw {a_obj} {where}')
#: Joins the items of a caption: "x", "x and y", "x, y and z".
CAPTION_JOINERS: tuple[str, ...] = (',', 'and')

#: Splits text into word and punctuation tokens.
TOKEN_PATTERN = re.compile(r'\w+|[^\w\s]+')
_PLACEHOLDER = re.compile(r'\{\w+\}')


def tokenize(text: str) -> list[str]:
    """Lower-case word/punctuation tokens of ``text`` (the WORDS convention)."""
    return TOKEN_PATTERN.findall(text.lower())


def _all_words() -> tuple[str, ...]:
    texts: list[str] = [*SHAPES, *PLURALS.values(), SUPERCATEGORY, *COLORS,
                        *SIZES, *POSITIONS, *POSITION_PHRASES.values(),
                        *RELATIONS, *NUMBERS, YES, NO, *ARTICLES,
                        *CAPTION_JOINERS]
    for names in KEYPOINT_NAMES.values():
        texts.extend(names)
    for group in (*COUNT_TEMPLATES.values(), COLOR_TEMPLATES, POSITION_TEMPLATES,
                  EXIST_TEMPLATES, CAPTION_TEMPLATES, RECOLOR_TEMPLATES,
                  REMOVE_TEMPLATES, ADD_TEMPLATES):
        texts.extend(_PLACEHOLDER.sub(' ', t) for t in group)
    return tuple(sorted({tok for text in texts for tok in tokenize(text)}))


#: Every lower-case token any generated text can contain, sorted.
WORDS: tuple[str, ...] = _all_words()
