"""benchmarks/image_reliance.py: the image swap and the teacher-forced answer check."""
import sys

import pytest
import torch

from conftest import BENCHMARKS, ROOT

sys.path.insert(0, BENCHMARKS)
sys.path.insert(0, f'{ROOT}/tests/test_models')
from test_super_link import batch, sample  # noqa: E402
from image_reliance import answer_hits, other_images  # noqa: E402


def test_other_images_gives_every_sample_a_different_picture_of_its_tile_count():
    # samples: a (1 tile), a again (1), b (2 tiles), c (1), d (2); tile i holds value i
    num_tiles, paths = [1, 1, 2, 1, 2], ['a', 'a', 'b', 'c', 'd']
    pixels = torch.arange(7.0).view(7, 1, 1, 1)
    out = other_images(pixels, num_tiles, paths).flatten().tolist()
    # a -> c (the next a is the same picture), a -> c, b -> d, c -> a, d -> b
    assert out == [4.0, 4.0, 5.0, 6.0, 0.0, 2.0, 3.0]


def test_other_images_fails_clearly_without_a_partner():
    with pytest.raises(ValueError, match="img/a.png: no other image with 1 tile"):
        other_images(torch.zeros(2, 3, 4, 4), [1, 1], ['img/a.png', 'img/a.png'])


def test_answer_hits_checks_every_answer_token_at_the_shifted_position(toy_model, monkeypatch):
    """An oracle head that predicts each next token right gets every sample; one wrong
    answer token (the first, or the end marker) costs exactly that sample."""
    toy_model.eval()
    samples = [sample('how many', 'red circle', image=True), sample('count', 'blue', image=True),
               sample('count', 'blue', image=True)]
    data = batch(toy_model, samples, image=True)
    ids = toy_model.encoder.batch([s.conversation for s in samples],
                                  toy_model._num_image_tokens([1, 1, 1]), False, ['x'] * 3)
    labels = ids['labels']
    vocab = toy_model._lm().get_output_embeddings().weight.shape[0]
    target = labels.roll(-1, 1).clamp(min=0)  # the state at p predicts the token at p + 1
    answer = [(labels[b] != -100).nonzero()[:, 0].tolist() for b in range(3)]
    target[1, answer[1][0] - 1] = (target[1, answer[1][0] - 1] + 1) % vocab
    target[2, answer[2][-1] - 1] = (target[2, answer[2][-1] - 1] + 1) % vocab
    monkeypatch.setattr(toy_model, '_hidden', lambda embeds, mask: torch.nn.functional.one_hot(
        target, vocab).float())
    monkeypatch.setattr(toy_model._lm(), 'get_output_embeddings', lambda: torch.nn.Identity())
    assert answer_hits(toy_model, data['inputs'], data['data_samples']) == [True, False, False]
