"""Visual prompts: rasterising, the region encoder, and <region> tokens in the MLLM."""
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from conftest import tiny_model_cfg
from test_super_link import batch, sample
from vlm2.datasets.visual_prompts import PROMPT_KINDS, box_prompt, sample_prompt
from vlm2.models import RegionEncoder, VisionTower
from vlm2.registry import MODELS


@pytest.mark.parametrize('image_size, patch_size', [(32, 8), (56, 14)])
def test_region_grid_follows_the_tower_config(image_size, patch_size):
    tower = VisionTower(model_class='CLIPVisionModel', config=dict(
        type='CLIPVisionConfig', hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, image_size=image_size, patch_size=patch_size))
    enc = RegionEncoder(tower.hidden_size, 64, tower.patch_size)
    grid = enc.mask_stem(torch.zeros(1, 4, image_size, image_size))
    assert grid.shape == (1, 32, tower.grid_size, tower.grid_size)
    images = torch.randn(2, 3, image_size, image_size)
    masks = torch.zeros(2, image_size, image_size)
    masks[0, :10, :10] = 1
    masks[1, -5:, -5:] = 1
    out = enc(images, masks, tower.hidden_states(images)[-3:])
    assert out.shape == (2, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize('kind', PROMPT_KINDS)
def test_each_prompt_kind_rasterises_inside_its_instance(kind):
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 10:50] = 1
    prompt = sample_prompt(mask, kind, np.random.default_rng(0))
    assert prompt.shape == mask.shape and prompt.any()
    if kind == 'circle':  # the enclosing circle surrounds the instance
        ys, xs = np.nonzero(prompt)
        assert xs.min() <= 10 and xs.max() >= 49
    else:
        assert not (prompt.astype(bool) & ~mask.astype(bool)).any()


def test_box_outside_the_image_and_empty_masks_are_errors():
    with pytest.raises(ValueError, match='ann 7: box .* outside the 32x32 image'):
        box_prompt((40, 40, 60, 60), (32, 32), where='ann 7')
    with pytest.raises(ValueError, match='non-empty'):
        sample_prompt(np.zeros((8, 8)), 'point', np.random.default_rng(0))
    enc = RegionEncoder(32, 64, 8)
    with pytest.raises(ValueError, match=r'region\(s\) \[1\].*empty mask'):
        masks = torch.zeros(2, 32, 32)
        masks[0, 3, 3] = 1
        enc(torch.zeros(2, 3, 32, 32), masks, [torch.zeros(2, 16, 32)] * 3)


@pytest.fixture
def region_model():
    init_default_scope('vlm2')
    torch.manual_seed(0)
    return MODELS.build(tiny_model_cfg(region_encoder=dict(num_levels=2)))


def region_sample(masks):
    s = sample('<image>\nwhat is <reg>region1<region></reg> and <reg>region2<region></reg>',
               'red circle and blue square')
    s.region_masks = torch.as_tensor(np.stack(masks))
    return s


def test_region_caption_loss_reaches_the_region_encoder(region_model):
    m1, m2 = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    m1[2:10, 2:10] = 1
    m2[20:30, 15:31] = 1
    region_model.train()
    losses = region_model(**batch(region_model, [region_sample([m1, m2])], image=True),
                          mode='loss')
    losses['loss_lm'].backward()
    grads = [p.grad for p in region_model.region_encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_two_regions_map_to_their_embeddings_in_order(region_model):
    m1, m2 = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    m1[2:10, 2:10] = 1
    m2[20:30, 15:31] = 1
    region_model.eval()
    data = batch(region_model, [region_sample([m1, m2])], image=True)
    with torch.no_grad():
        b, embeds = region_model.embed(data['inputs'], data['data_samples'], False)
        px = data['inputs']['pixel_values']
        layers = region_model.vision_tower.hidden_states(px)
        direct = [region_model.region_encoder(px, torch.as_tensor(m)[None], layers)
                  for m in (m1, m2)]
    pos = (b['input_ids'][0] == region_model.encoder.region_id).nonzero().flatten()
    assert len(pos) == 2
    for p, d in zip(pos, direct):
        torch.testing.assert_close(embeds[0, p], d[0])
    assert not torch.allclose(direct[0], direct[1])


def test_region_count_must_match_the_tokens(region_model):
    m = np.zeros((32, 32), np.uint8)
    m[2:10, 2:10] = 1
    with pytest.raises(ValueError, match='1 region mask.*2 <region> token'):
        region_model(**batch(region_model, [region_sample([m])], image=True), mode='loss')


# ---- region_queries: a named region's embedding on its phrase's queries ----------------------
def region_toy_model(region_queries=True):
    from conftest import build_toy_model
    return build_toy_model(region_encoder=dict(num_levels=2), region_queries=region_queries)


def two_region_sample(answer):
    m1, m2 = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    m1[2:10, 2:10] = 1
    m2[20:30, 15:31] = 1
    s = sample('<image>\nhow many <reg>cat<region></reg> <reg>dog<region></reg>', answer,
               toy_target=[0.5, 1.0])
    s.region_masks = torch.as_tensor(np.stack([m1, m2]))
    return s


def test_region_queries_add_the_named_region_to_its_phrase_queries():
    """'dog[TOY]' names the second region: its queries get that region's embedding; 'red[TOY]'
    names none and keeps the bare query table."""
    torch.manual_seed(0)
    data = batch(region_toy_model(), [two_region_sample('dog[TOY] red[TOY]')], image=True)
    model_off = region_toy_model(region_queries=False)
    model_on = region_toy_model()
    model_on.load_state_dict(model_off.state_dict())
    model_on.eval(), model_off.eval()
    with torch.no_grad():
        b, on = model_on.embed(data['inputs'], data['data_samples'], False)
        _, off = model_off.embed(data['inputs'], data['data_samples'], False)
    ids = b['input_ids'][0]
    regions = b['region_embeds']
    toy = model_on.encoder.routing_ids['[TOY]']
    first, second = (ids == toy).nonzero().flatten().tolist()
    changed = (on - off)[0].abs().sum(-1) > 0
    assert changed.nonzero().flatten().tolist() == list(range(first + 1, first + 4))
    torch.testing.assert_close(on[0, first + 1:first + 4], off[0, first + 1:first + 4] + regions[1])
    assert not changed[second + 1:second + 4].any()


def test_region_queries_in_generation_match_a_teacher_forced_pass():
    """Generating 'dog[TOY]' pulls in the queries plus the dog region's embedding, exactly as
    the teacher-forced pass of the same reply gives them to the decoder."""
    from test_generation import scripted
    model = region_toy_model()
    model.eval()
    decoder = model.super_link.decoders['toy']
    asked = two_region_sample('')
    asked.conversation = asked.conversation[:1]
    with torch.no_grad():
        torch.manual_seed(1)
        out = model.predict(**batch(model, [asked], image=True),
                            logits_processor=scripted(model, [['dog', '[TOY]', '</s>']]))
        generated = decoder.seen[-1]
        model.test_cfg['routing'] = 'forced'
        torch.manual_seed(1)
        model.predict(**batch(model, [two_region_sample('dog[TOY]')], image=True))
        forced = decoder.seen[-1]
        model.region_queries = False
        model.predict(**batch(model, [two_region_sample('dog[TOY]')], image=True))
        without = decoder.seen[-1]
    assert out[0].pred_text == 'dog [TOY]' and out[0].toy_names == ['dog']
    torch.testing.assert_close(generated[0], forced[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(forced[0], without[0], atol=1e-3)


def test_region_queries_need_a_region_encoder():
    with pytest.raises(ValueError, match='region_queries needs a model.region_encoder'):
        MODELS.build(tiny_model_cfg(region_queries=True))
