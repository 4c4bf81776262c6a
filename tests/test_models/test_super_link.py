"""The super link: query tables, [EMB] handling, gradients, routing and errors."""
import pytest
import torch
from mmengine.registry import init_default_scope

from conftest import tiny_model_cfg
from vlm2.registry import MODELS
from vlm2.structures import VLMDataSample


def sample(question, answer, toy_target=None, image=False):
    s = VLMDataSample(metainfo=dict(sample_id=question))
    s.conversation = [{'from': 'human', 'value': ('<image>\n' if image else '') + question},
                      {'from': 'gpt', 'value': answer}]
    s.task = 'toy'
    if toy_target is not None:
        s.toy_target = toy_target
    return s


def batch(model, samples, image=False):
    tiles = [torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8) if image else None
             for _ in samples]
    return model.data_preprocessor(dict(inputs=tiles, data_samples=samples), True)


def test_emb_positions_carry_no_lm_loss_and_routing_token_does(toy_model):
    enc = toy_model.encoder
    ids, labels = enc.encode(sample('count', 'red circle[TOY], blue square[TOY2]').conversation,
                             0)
    toy, toy2 = enc.routing_ids['[TOY]'], enc.routing_ids['[TOY2]']
    for rid in (toy, toy2):
        p = ids.index(rid)
        assert labels[p] == rid  # the routing token is supervised
        assert ids[p + 1:p + 4] == [enc.emb_id] * 3  # its decoder's run of 3 queries
        assert labels[p + 1:p + 4] == [-100] * 3  # [EMB] carries no LM loss
    assert ids.count(enc.emb_id) == 6


def test_decoder_loss_reaches_queries_llm_and_projector(toy_model):
    samples = [sample('count', 'red circle[TOY] and blue square[TOY2]', [1.0, -1.0], True),
               sample('how many', 'cat[TOY]', [0.5], True)]
    toy_model.train()
    losses = toy_model(**batch(toy_model, samples, image=True), mode='loss')
    assert set(losses) == {'loss_lm', 'toy.loss_toy'}
    toy_model.zero_grad()
    losses['toy.loss_toy'].backward()
    table = toy_model.super_link.queries['toy'].weight
    assert table.grad is not None and table.grad.abs().sum() > 0
    llm_grads = [p.grad for p in toy_model.llm.parameters() if p.grad is not None]
    assert llm_grads and sum(g.abs().sum() for g in llm_grads) > 0
    assert toy_model.projector[0].weight.grad.abs().sum() > 0
    patch = dict(toy_model.vision_tower.named_parameters())
    patch = next(v for k, v in patch.items() if 'patch_embedding' in k)
    assert patch.grad.abs().sum() > 0


def test_idle_decoder_joins_graph_at_zero_weight(toy_model):
    toy_model.train()
    losses = toy_model(**batch(toy_model, [sample('count', 'two')]), mode='loss')
    assert float(losses['loss_idle'].detach()) == 0.0
    toy_model.zero_grad()
    sum(losses.values()).backward()
    for p in list(toy_model.super_link.parameters()):
        assert p.grad is not None  # in the graph, as DDP needs
        assert p.grad.abs().sum() == 0


def test_each_decoder_owns_one_table_shared_by_its_tokens(toy_model):
    link = toy_model.super_link
    assert list(link.queries) == ['toy']
    assert link.token_owner == {'[TOY]': 'toy', '[TOY2]': 'toy'}
    rows = link.query_rows(torch.tensor([toy_model.encoder.routing_ids['[TOY]'],
                                         toy_model.encoder.routing_ids['[TOY2]']]))
    assert rows[0] is rows[1] is link.queries['toy'].weight


@pytest.mark.parametrize('decoder, message', [
    (dict(type='ToyDecoder', num_queries=0), 'num_queries'),
    (dict(type='ToyDecoder', routing_tokens=['DET']), 'routing token'),
    (dict(type='ToyDecoder', routing_tokens=['[EMB]']), 'routing token'),
])
def test_bad_decoder_configs_fail_clearly(decoder, message):
    import toy_plugin  # noqa: F401
    init_default_scope('vlm2')
    with pytest.raises(ValueError, match=message) as info:
        MODELS.build(tiny_model_cfg(decoders=dict(toy=decoder)))
    assert 'model.super_link.decoders.toy' in str(info.value)


def test_two_decoders_cannot_own_one_token():
    import toy_plugin  # noqa: F401
    init_default_scope('vlm2')
    with pytest.raises(ValueError, match='already owned'):
        MODELS.build(tiny_model_cfg(decoders=dict(a=dict(type='ToyDecoder'),
                                                  b=dict(type='ToyDecoder'))))


def test_routing_token_ids_do_not_depend_on_the_order_of_the_decoders():
    # MMEngine dumps a run's config with sorted keys: a checkpoint must read the same ids
    # from work_dir/<config>.py as from the config it was trained with
    import toy_plugin  # noqa: F401
    init_default_scope('vlm2')
    a, b = dict(type='ToyDecoder', routing_tokens=['[TOY2]']), \
        dict(type='ToyDecoder', routing_tokens=['[TOY]'])
    ids = [MODELS.build(tiny_model_cfg(decoders=decoders)).encoder.routing_ids
           for decoders in (dict(zeta=a, alpha=b), dict(alpha=b, zeta=a))]
    assert ids[0] == ids[1] and ids[0]['[TOY2]'] < ids[0]['[TOY]']  # sorted by name


def test_unknown_routing_token_in_an_answer_names_the_sample(toy_model):
    with pytest.raises(ValueError, match=r'unknown routing token \[POSE\].*\[TOY\]'):
        toy_model.encoder.encode(sample('count', 'cat[POSE]').conversation, 0,
                                 where='ann.json id=7')
