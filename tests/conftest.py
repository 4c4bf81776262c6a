"""Shared fixtures: tiny model configs (the real classes, small sizes) and a toy plugin."""
import copy
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, 'benchmarks')
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
if FIXTURES not in sys.path:  # lets tests import the test-only plugin like custom_imports does
    sys.path.insert(0, FIXTURES)

WORDS = ['red', 'blue', 'circle', 'square', 'how', 'many', 'count', 'cat', 'dog']

TINY_MODEL = dict(
    type='VisionLLMv2',
    tokenizer=dict(type='WordLevelTokenizer', words=WORDS),
    vision_tower=dict(type='VisionTower', model_class='CLIPVisionModel', frozen=False,
                      config=dict(type='CLIPVisionConfig', hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=2, image_size=32,
                                  patch_size=8)),
    llm=dict(config=dict(type='LlamaConfig', hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)),
    template='plain',
    max_length=128)


def tiny_model_cfg(decoders=None, **overrides) -> dict:
    cfg = copy.deepcopy(TINY_MODEL)
    if decoders is not None:
        cfg['super_link'] = dict(decoders=decoders)
    cfg.update(overrides)
    return cfg


def build_toy_model(**overrides):
    """The tiny model with the test-only toy decoder, seeded; ``overrides`` as in
    :func:`tiny_model_cfg`."""
    import toy_plugin  # noqa: F401  registers ToyDecoder
    import torch
    from mmengine.registry import init_default_scope
    from vlm2.registry import MODELS
    init_default_scope('vlm2')
    torch.manual_seed(0)
    return MODELS.build(tiny_model_cfg(decoders=dict(toy=dict(type='ToyDecoder')), **overrides))


@pytest.fixture
def toy_model():
    return build_toy_model()


def save_tiny_pretrained(root, words=('red', 'circle', 'how', 'many'), image_size=32,
                         patch_size=8):
    """Write a tiny 'pretrained' LLM + tokenizer and a CLIP vision tower with save_pretrained.

    Returns the LLM object, so tests can compare with what the model loaded.
    """
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
    from vlm2.models.tokenizers import WordLevelTokenizer
    torch.manual_seed(0)
    tok = WordLevelTokenizer(list(words))
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64,
                                       intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2))
    llm.save_pretrained(os.path.join(root, 'llm'))
    tok.save_pretrained(os.path.join(root, 'llm'))
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, image_size=image_size,
                                     patch_size=patch_size)).save_pretrained(
        os.path.join(root, 'clip'))
    return llm


def recipe_rates(config: str, parts) -> tuple:
    """Build a recipe's model and optimizer as the runner does. Returns the base learning
    rate, ``{name: set of learning rates}`` of the modules ``parts(model)`` names, and whether
    every trainable parameter is in the optimizer."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    from vlm2.registry import MODELS
    init_default_scope('vlm2')
    cfg = Config.fromfile(config)
    import_modules_from_strings(**cfg.custom_imports)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr_of = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    rates = {name: {lr_of[id(p)] for p in part.parameters() if p.requires_grad}
             for name, part in parts(model).items()}
    covered = len(lr_of) == len({id(p) for p in model.parameters() if p.requires_grad})
    return cfg.optim_wrapper.optimizer.lr, rates, covered
