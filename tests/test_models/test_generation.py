"""Batched generation: routing tokens at different steps pull in their queries per sample."""
import pytest
import torch

from conftest import build_toy_model
from test_super_link import batch, sample

# The tiny recipes' LLM: sliding-window layers first (configs/_base_/models/visionllmv2_tiny.py).
# A window of 2 is shorter than the scripts, so a cache or mask that ignored it would show.
SLIDING_LLM = dict(config=dict(type='Qwen2Config', hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, max_position_embeddings=256,
                               use_sliding_window=True, sliding_window=2,
                               layer_types=['sliding_attention', 'full_attention']))


@pytest.fixture(params=['full', 'sliding'])
def gen_model(request):
    return build_toy_model(**(dict(llm=SLIDING_LLM) if request.param == 'sliding' else {}))

# Every token differs from the one before it, so a state that lost its predecessor shows.
SCRIPTS = [['red', '[TOY]', 'cat', '</s>'],
           ['dog', 'cat', 'circle', 'red', '[TOY2]', 'blue', '[TOY]', '</s>'],
           ['how', 'many', '</s>']]
PROMPTS = ['count', 'how many', 'red']


def scripted(model, scripts):
    """A logits processor that makes each sample emit its script (HF-style)."""
    ids = [model.tokenizer.convert_tokens_to_ids(s) for s in scripts]

    def process(tokens, logits):
        forced = torch.full_like(logits, -1e9)
        for b, done in enumerate(tokens):
            forced[b, ids[b][min(len(done), len(ids[b]) - 1)]] = 0
        return logits + forced
    return process


def run(model, indices, scripts=SCRIPTS):
    decoder = model.super_link.decoders['toy']
    decoder.seen.clear()
    samples = [sample(PROMPTS[i], '') for i in indices]
    for s in samples:
        s.conversation = s.conversation[:1]
    with torch.no_grad():
        out = model.predict(**batch(model, samples),
                            logits_processor=scripted(model, [scripts[i] for i in indices]))
    return out, list(decoder.seen)


def test_batched_generation_matches_per_sample_runs(gen_model):
    toy_model = gen_model
    toy_model.eval()
    batched, seen = run(toy_model, [0, 1, 2])
    assert [s.pred_text for s in batched] == [
        'red [TOY] cat', 'dog cat circle red [TOY2] blue [TOY]', 'how many']
    # a phrase name is the text since the previous phrase (or the answer start)
    assert batched[0].pred_phrases == ['red']
    assert batched[1].pred_phrases == ['dog cat circle red', 'blue']
    assert batched[1].toy_names == batched[1].pred_phrases
    assert 'pred_toy' not in batched[2]  # no routing token, the decoder did not fire
    assert [len(s) for s in seen] == [1, 2]
    for b, states in zip([0, 1], seen):
        single, single_seen = run(toy_model, [b])
        assert single[0].pred_text == batched[b].pred_text
        for x, y in zip(states, single_seen[0]):
            assert x.shape == (3, 64)
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_samples_waiting_through_several_routing_steps_keep_their_context(gen_model):
    """Sample 1 waits behind padding at three steps, two of them in a row, before it routes."""
    scripts = [['red', '[TOY]', '[TOY]', 'cat', '</s>'],
               ['dog', 'cat', 'circle', 'red', 'blue', '[TOY2]', '</s>'],
               ['how', '[TOY]', 'many', 'red', '[TOY]', '</s>']]
    gen_model.eval()
    _, seen = run(gen_model, [0, 1, 2], scripts)
    assert [len(s) for s in seen] == [2, 1, 2]
    for b, states in enumerate(seen):
        _, single_seen = run(gen_model, [b], scripts)
        for x, y in zip(states, single_seen[0], strict=True):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_generated_states_match_a_teacher_forced_pass(gen_model):
    """The reference: the finished reply, fed at once with its [EMB] runs (forced routing)."""
    toy_model = gen_model
    toy_model.eval()
    _, seen = run(toy_model, [1])
    toy_model.test_cfg['routing'] = 'forced'
    forced = sample(PROMPTS[1], 'dog cat circle red[TOY2] blue[TOY]')
    with torch.no_grad():
        out = toy_model.predict(**batch(toy_model, [forced]))
    assert out[0].toy_names == ['dog cat circle red', 'blue']
    for x, y in zip(seen[0], toy_model.super_link.decoders['toy'].seen[-1]):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
