"""benchmarks/lookup_probe.py: existence questions with the scene written out as its caption."""
import json
import sys

import pytest
import torch

from conftest import BENCHMARKS

sys.path.insert(0, BENCHMARKS)
from lookup_probe import collate, existence_in_text  # noqa: E402


def _write(root, captions, records):
    (root / 'annotations').mkdir()
    with open(root / 'annotations' / 'captions_val.jsonl', 'w') as f:
        for image, caption in captions.items():
            f.write(json.dumps(dict(image=image, caption=caption)) + '\n')
    with open(root / 'annotations' / 'llava_val.json', 'w') as f:
        json.dump(records, f)


def _record(image, *turns):
    conv = []
    for k, (q, a) in enumerate(turns):
        conv += [{'from': 'human', 'value': ('<image>\n' if k == 0 else '') + q},
                 {'from': 'gpt', 'value': a}]
    return dict(id=image, image=image, conversations=conv)


def test_existence_turns_get_their_own_image_caption(tmp_path):
    _write(tmp_path, {'val/0.png': 'a red circle', 'val/1.png': 'a blue star'},
           [_record('val/0.png', ('How many circles are there?', '1'),
                    ('Is there a blue star?', 'no')),
            _record('val/1.png', ('Does the image contain a blue star?', 'yes'))])
    assert existence_in_text(str(tmp_path), 'val') == [
        ('a red circle . Is there a blue star?', 'no'),
        ('a blue star . Does the image contain a blue star?', 'yes')]


def test_missing_caption_names_the_file_and_the_image(tmp_path):
    _write(tmp_path, {'val/0.png': 'a red circle'},
           [_record('val/1.png', ('Is there a red circle?', 'no'))])
    with pytest.raises(KeyError, match=r'captions_val.jsonl.*val/1.png'):
        existence_in_text(str(tmp_path), 'val')


def test_collate_left_pads_so_the_answer_is_read_at_the_last_position():
    ids, mask, target = collate([([5, 6, 7], 1), ([8], 0)], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert torch.equal(target, torch.tensor([1, 0]))
