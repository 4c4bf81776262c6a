"""The MLLM: pretrained folders, image merging, forward modes and truncation."""
import itertools
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import BENCHMARKS, save_tiny_pretrained, tiny_model_cfg
from test_super_link import batch, sample
from vlm2.registry import MODELS

sys.path.insert(0, BENCHMARKS)
from phrase_probe import probe  # noqa: E402  the R2 that benchmarks/phrase_probe.py reports

TINY_RECIPE_MODEL = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                             'configs', '_base_', 'models', 'visionllmv2_tiny.py')


@pytest.fixture
def pretrained_folders(tmp_path):
    return tmp_path, save_tiny_pretrained(str(tmp_path))


def test_loads_pretrained_folders_and_inits_new_tokens_to_the_mean(pretrained_folders):
    root, llm = pretrained_folders
    init_default_scope('vlm2')
    cfg = tiny_model_cfg(tokenizer=dict(type='PretrainedTokenizer', path=str(root / 'llm')),
                         llm=dict(pretrained=str(root / 'llm')),
                         vision_tower=dict(type='VisionTower', pretrained=str(root / 'clip'),
                                           model_class='CLIPVisionModel'))
    model = MODELS.build(cfg)
    old = llm.get_input_embeddings().weight
    new = model.llm.get_input_embeddings().weight
    assert new.shape[0] > old.shape[0]  # <im_patch>, [EMB], <region>, ...
    assert torch.equal(new[:old.shape[0]], old)  # the pretrained rows are kept
    assert torch.allclose(new[old.shape[0]:], old.mean(0, keepdim=True).expand(
        new.shape[0] - old.shape[0], -1))
    assert not any(p.requires_grad for p in model.vision_tower.parameters())  # frozen default
    model.eval()
    out = model(**batch(model, [sample('how many', 'red circle', image=True)], image=True),
                mode='tensor')
    assert out.shape[-1] == len(model.tokenizer)


def test_pretrained_path_must_be_a_local_folder():
    init_default_scope('vlm2')
    with pytest.raises(FileNotFoundError, match='model.llm.pretrained.*not a local folder'):
        MODELS.build(tiny_model_cfg(llm=dict(pretrained='lmsys/vicuna-7b-v1.5'),
                                    tokenizer=dict(type='WordLevelTokenizer', words=['a'])))


def test_image_features_replace_the_image_run(toy_model):
    toy_model.eval()
    data = batch(toy_model, [sample('how many', 'two', image=True)], image=True)
    ids = toy_model.encoder.batch([data['data_samples'][0].conversation], [16], False, ['s'])
    assert int((ids['input_ids'] == toy_model.encoder.image_id).sum()) == 16  # 4x4 patches
    with torch.no_grad():
        _, embeds = toy_model.embed(data['inputs'], data['data_samples'], False)
        feats = toy_model.projector(toy_model.vision_tower(data['inputs']['pixel_values']))
    mask = ids['input_ids'][0] == toy_model.encoder.image_id
    assert torch.allclose(embeds[0, mask], feats[0])


def test_image_without_placeholder_fails_naming_the_sample(toy_model):
    s = sample('how many', 'two')  # no <image> in the text, but an image is given
    with pytest.raises(ValueError, match="id=how many.*no image|has an image"):
        toy_model(**batch(toy_model, [s], image=True), mode='loss')


def test_too_long_answer_is_cut_before_its_routing_run(toy_model):
    enc = toy_model.encoder
    conv = sample('count', 'red red red cat[TOY] dog[TOY]').conversation
    full, _ = enc.encode(conv, 0)
    enc.max_length = 12
    assert len(full) > 12
    ids, labels = enc.encode(conv, 0)
    assert len(ids) <= 12 and len(ids) == len(labels)
    toy = enc.routing_ids['[TOY]']
    # a routing token in the result always has its complete run of queries
    for p, i in enumerate(ids):
        if i == toy:
            assert ids[p + 1:p + 4] == [enc.emb_id] * 3
    assert enc.num_truncated >= 1


def test_image_run_that_does_not_fit_is_an_error(toy_model):
    toy_model.encoder.max_length = 10
    with pytest.raises(ValueError, match='image run does not fit'):
        toy_model.encoder.encode(sample('how many', 'two', image=True).conversation, 16)


def test_trainable_tower_freezes_what_the_selected_layer_does_not_reach():
    from vlm2.models import VisionTower
    tower = VisionTower(model_class='CLIPVisionModel', frozen=False, select_layer=-2,
                        config=dict(type='CLIPVisionConfig', hidden_size=32,
                                    intermediate_size=64, num_hidden_layers=3,
                                    num_attention_heads=2, image_size=32, patch_size=8))
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert any('layers.1.' in n for n in trainable)  # feeds hidden_states[-2]
    assert not any('layers.2.' in n or 'post_layernorm' in n for n in trainable)
    assert tower(torch.zeros(2, 3, 32, 32)).shape == (2, 16, 32)  # CLS dropped


def test_lora_stage2_trains_adapters_and_the_decoder_path():
    """Stage 2: the LLM through LoRA (r, alpha from the paper's recipe, scaled down)."""
    import toy_plugin  # noqa: F401
    init_default_scope('vlm2')
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(
        decoders=dict(toy=dict(type='ToyDecoder')),
        lora=dict(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'])))
    model.train()
    losses = model(**batch(model, [sample('count', 'red circle[TOY]', [1.0])]), mode='loss')
    sum(losses.values()).backward()
    named = dict(model.llm.named_parameters())
    lora = [p for n, p in named.items() if 'lora_' in n]
    assert lora and all(p.requires_grad for p in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    base = [p for n, p in named.items() if 'lora_' not in n]
    assert base and not any(p.requires_grad for p in base)  # the LLM itself is frozen
    assert model.super_link.queries['toy'].weight.grad.abs().sum() > 0


def test_pixel_shuffle_merges_neighbouring_patches():
    from vlm2.models import VisionTower
    tower = VisionTower(model_class='CLIPVisionModel', pixel_shuffle=2, config=dict(
        type='CLIPVisionConfig', hidden_size=8, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, image_size=32, patch_size=8))
    feats = torch.arange(16 * 8, dtype=torch.float).reshape(1, 16, 8)  # a 4x4 grid
    out = tower.shuffle(feats)
    assert out.shape == (1, 4, 32) and tower.num_tokens == 4 and tower.out_channels == 32
    # the first token holds patches (0,0), (0,1), (1,0), (1,1) of the grid
    assert torch.equal(out[0, 0], torch.cat([feats[0, 0], feats[0, 1], feats[0, 4], feats[0, 5]]))


def test_conv_stem_replaces_the_patchify_conv_and_keeps_the_grid():
    from vlm2.models import VisionTower
    config = dict(type='CLIPVisionConfig', hidden_size=16, intermediate_size=32,
                  num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    tower = VisionTower(model_class='CLIPVisionModel', frozen=False, select_layer=-1,
                        conv_stem=[4, 8, 8], config=config)
    stem = next(m for n, m in tower.model.named_modules() if n.endswith('patch_embedding'))
    # building it ran no batch through the stem's BatchNorm (its statistics start clean)
    assert all(int(m.num_batches_tracked) == 0 for m in stem
               if isinstance(m, torch.nn.BatchNorm2d))
    assert [m.stride for m in stem if isinstance(m, torch.nn.Conv2d)] == [(2, 2)] * 3 + [(1, 1)]
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = tower(x)
    assert out.shape == (2, 16, 16)  # the same 4x4 grid of 8-px patches, CLS dropped
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())
    # a pixel only moves the tokens of its own patch's neighbourhood: the stem is local
    with torch.no_grad():
        tower.eval()
        base = tower.hidden_states(torch.zeros(1, 3, 32, 32))[0]
        poked = torch.zeros(1, 3, 32, 32)
        poked[0, :, 0, 0] = 5.0
        changed = (tower.hidden_states(poked)[0] - base).abs().sum(-1)[0] > 1e-5
    assert changed[0] and not changed[15]  # patch (0, 0) moves, patch (3, 3) does not
    with pytest.raises(ValueError, match='conv_stem: 2 stride-2 convs give 4-px patches'):
        VisionTower(model_class='CLIPVisionModel', conv_stem=[4, 8], config=config)


def test_frozen_tower_feature_cache_runs_each_tile_once_and_returns_the_same_features():
    from vlm2.models import VisionTower
    config = dict(type='CLIPVisionConfig', hidden_size=16, intermediate_size=32,
                  num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    tower = VisionTower(model_class='CLIPVisionModel', config=config, feature_cache=3)
    plain = VisionTower(model_class='CLIPVisionModel', config=config)
    plain.load_state_dict(tower.state_dict())
    runs = []
    tower.model.register_forward_hook(lambda m, args, kw, out: runs.append(
        kw['pixel_values'].shape[0]), with_kwargs=True)
    x = torch.randn(5, 3, 32, 32)
    tower(x[:2])
    order = [1, 2, 0, 3, 4]  # two kept tiles, then three new ones of which one more is kept
    out = tower.hidden_states(x[order])
    assert runs == [2, 3] and len(tower._cache) == 3
    for got, want in zip(out, plain.hidden_states(x[order])):
        torch.testing.assert_close(got, want)
    tower(x[[0, 1, 2]])
    assert runs == [2, 3]  # all three kept: the tower did not run
    with torch.autocast('cpu', dtype=torch.bfloat16):
        tower(x[:1])
    assert runs == [2, 3, 1]  # the same tile under autocast is another entry
    tower.load_state_dict(plain.state_dict())  # new weights: what was kept is stale
    assert len(tower._cache) == 0
    # a tower that trains keeps nothing, so a recipe that unfreezes it need not unset it
    trained = VisionTower(model_class='CLIPVisionModel', config=config, frozen=False,
                          feature_cache=3)
    assert trained.feature_cache == 0
    trained(x[:2]).sum().backward()
    assert len(trained._cache) == 0


def _phrase_r2(llm: dict) -> float:
    """Share of the variance of the [TOY] phrase states that the phrase's word explains, over
    shuffled class lists, for the tiny recipe's model with ``llm`` (initialised, no image)."""
    import toy_plugin  # noqa: F401  registers ToyDecoder
    init_default_scope('vlm2')
    cfg = Config.fromfile(TINY_RECIPE_MODEL).model
    cfg.super_link = dict(decoders=dict(toy=dict(type='ToyDecoder')))
    cfg.vision_tower = None
    cfg.test_cfg = dict(routing='forced')
    cfg.llm = llm
    torch.manual_seed(0)
    model = MODELS.build(cfg.to_dict()).eval()
    words = ['circle', 'square', 'star', 'hexagon']
    samples, names = [], []
    for order in itertools.permutations(words):
        samples.append(sample('detect ' + ' , '.join(order) + ' in the image',
                              ' , '.join(f'{w}[TOY]' for w in order)))
        names += order
    with torch.no_grad():
        model.predict(**batch(model, samples))
    states = torch.cat([torch.stack(s).mean(1) for s in model.super_link.decoders['toy'].seen])
    return probe(states, names)['r2']


def test_tiny_recipe_phrase_states_carry_their_phrase_from_the_start():
    """The tiny recipe's LLM starts from scratch; its sliding-window layers make the query
    states after ``circle[TOY]`` depend on "circle" before any training. With full attention
    everywhere they depend on the phrase's place in the list instead (benchmarks/
    phrase_probe.py measured what that does to detection)."""
    llm = Config.fromfile(TINY_RECIPE_MODEL).model.llm
    assert _phrase_r2(llm.to_dict()) > 0.3
    full = llm.to_dict()
    full['config'] = {k: v for k, v in full['config'].items()
                      if k not in ('use_sliding_window', 'sliding_window', 'layer_types')}
    assert _phrase_r2(full) < 0.1
