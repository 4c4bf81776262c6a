"""The generation plugin: [GEN]/[EDIT] decoders, adapters, image loading, analyser, metrics."""
import json
from typing import Optional

import mmcv
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from conftest import recipe_rates, tiny_model_cfg
from vlm2.datasets.shapes_world.scene import Scene, Shape, sample_shape
from vlm2.plugins.diffusion import (CaptionImageDataset, CLIPScoreMetric, FIDMetric,
                                    InstructEditDataset, LoadDiffusionImages,
                                    ShapesGenerationMetric)
from vlm2.plugins.diffusion.analyser import (analyse_image, check_edit, check_generation,
                                             parse_objects)
from vlm2.registry import MODELS
from vlm2.structures import VLMDataSample

SIZE = 16  # image side of the tiny decoders
WORDS = ['generate', 'an', 'image', 'of', 'red', 'circle', 'edit', 'make', 'blue']


def tiny_unet(in_channels: int, out_channels: int, sample: int = 8) -> dict:
    return dict(config=dict(
        sample_size=sample, in_channels=in_channels, out_channels=out_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
        up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), cross_attention_dim=16,
        attention_head_dim=4))


TINY_VAE = dict(config=dict(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=('DownEncoderBlock2D', 'DownEncoderBlock2D'),
                            up_block_types=('UpDecoderBlock2D', 'UpDecoderBlock2D'),
                            block_out_channels=(8, 16), norm_num_groups=4, sample_size=SIZE))
NOISE = dict(type='DDPMScheduler', num_train_timesteps=100)
# the tiny recipe's kind: v-prediction, cosine schedule, sampled from the last step
V_NOISE = dict(NOISE, beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction',
               timestep_spacing='trailing')


def decoders(edit_vae: bool = False, noise: dict = NOISE) -> dict:
    common = dict(scheduler=noise, image_size=SIZE, conditioner=dict(num_heads=2),
                  test_cfg=dict(num_steps=3, guidance_scale=3.0, image_guidance_scale=1.5))
    edit = dict(type='ImageEditDecoder', unet=tiny_unet(24, 12), pixel_patch=2, **common)
    if edit_vae:
        edit.update(unet=tiny_unet(8, 4), vae=TINY_VAE, pixel_patch=1)
    return dict(gen=dict(type='TextToImageDecoder', unet=tiny_unet(12, 12), pixel_patch=2,
                         **common), edit=edit)


def build(edit_vae: bool = False, routing: str = 'forced', noise: dict = NOISE,
          decs: Optional[dict] = None):
    """The tiny model with the tiny decoders, or ``decs`` (e.g. :func:`decoders` changed)."""
    import vlm2.plugins.diffusion  # noqa: F401  registers the decoders
    init_default_scope('vlm2')
    torch.manual_seed(0)
    cfg = tiny_model_cfg(decoders=decs or decoders(edit_vae, noise))
    cfg['tokenizer'] = dict(type='WordLevelTokenizer', words=WORDS)
    cfg['test_cfg'] = dict(routing=routing)
    return MODELS.build(cfg)


def gen_sample(i: int = 0) -> VLMDataSample:
    s = VLMDataSample(metainfo=dict(sample_id=f'g{i}'))
    s.conversation = [{'from': 'human', 'value': 'generate an image of a red circle'},
                      {'from': 'gpt', 'value': '[GEN]'}]
    s.task = 'gen'
    s.caption = 'a red circle'
    s.target_image = torch.randint(0, 255, (3, SIZE, SIZE), dtype=torch.uint8)
    return s


def edit_sample(i: int = 0) -> VLMDataSample:
    s = VLMDataSample(metainfo=dict(sample_id=f'e{i}'))
    s.conversation = [{'from': 'human', 'value': '<image>\nedit : make the circle blue'},
                      {'from': 'gpt', 'value': '[EDIT]'}]
    s.task = 'edit'
    s.instruction = 'make the circle blue'
    s.target_image = torch.randint(0, 255, (3, SIZE, SIZE), dtype=torch.uint8)
    s.source_image = torch.randint(0, 255, (3, SIZE, SIZE), dtype=torch.uint8)
    return s


def run(model, samples, mode):
    image = samples[0].task == 'edit'
    tiles = [torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8) if image else None
             for _ in samples]
    data = model.data_preprocessor(dict(inputs=tiles, data_samples=samples), mode == 'loss')
    return model(**data, mode=mode)


class UNetInputs:
    """Records the input shape of every UNet call."""

    def __init__(self, unet):
        self.shapes = []
        self.handle = unet.register_forward_pre_hook(
            lambda m, args, kwargs: self.shapes.append(tuple(args[0].shape)), with_kwargs=True)


# ---- decoders ------------------------------------------------------------------------------
def test_denoising_loss_reaches_the_gen_table_and_the_llm():
    model = build()
    losses = run(model, [gen_sample(0), gen_sample(1)], 'loss')
    losses['gen.loss_diffusion'].backward()
    assert model.super_link.queries['gen'].weight.grad.abs().sum() > 0
    assert model.llm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    other = model.super_link.queries['edit'].weight.grad  # the other table gets nothing
    assert other is None or not other.any()
    assert model.super_link.decoders['gen'].conditioner.proj[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize('state_grad', [0.0, 0.5])
def test_state_grad_scales_what_reaches_the_llm_not_the_conditioner(state_grad):
    grads = {}
    for scale in (1.0, state_grad):
        model = build()
        model.super_link.decoders['gen'].state_grad = scale
        losses = run(model, [gen_sample(0), gen_sample(1)], 'loss')
        losses['gen.loss_diffusion'].backward()
        grads[scale] = (model.super_link.queries['gen'].weight.grad,
                        model.super_link.decoders['gen'].conditioner.proj[0].weight.grad)
    (table, proj), (table_s, proj_s) = grads[1.0], grads[state_grad]
    assert torch.allclose(proj_s, proj)  # the same forward pass, the conditioner's gradient
    if state_grad == 0.0:
        assert table_s is None or not table_s.any()
    else:
        assert torch.allclose(table_s, state_grad * table, atol=1e-7)


@pytest.mark.parametrize('sampler', ['DDIMScheduler', 'DPMSolverMultistepScheduler'])
def test_same_seed_gives_bit_identical_images_and_another_seed_does_not(sampler):
    from vlm2.plugins.diffusion.builders import sampler_class
    model = build().eval()
    model.super_link.decoders['gen'].sampler_cls = sampler_class(sampler, 'sampler')
    with torch.no_grad():
        a = run(model, [gen_sample(0), gen_sample(1)], 'predict')
        b = run(model, [gen_sample(0), gen_sample(1)], 'predict')
        model.super_link.decoders['gen'].test_cfg['seed'] = 1
        c = run(model, [gen_sample(0), gen_sample(1)], 'predict')
    for x, y in zip(a, b):
        assert x.pred_image.dtype == np.uint8 and x.pred_image.shape == (SIZE, SIZE, 3)
        assert np.array_equal(x.pred_image, y.pred_image)
    assert not np.array_equal(a[0].pred_image, c[0].pred_image)


@pytest.mark.parametrize('task, scales, copies', [
    ('gen', (1.0, 1.0), 1), ('gen', (3.0, 1.0), 2),
    ('edit', (1.0, 1.0), 1), ('edit', (3.0, 1.0), 2), ('edit', (3.0, 1.5), 3)])
def test_guidance_scale_one_skips_the_unconditional_pass(task, scales, copies):
    model = build().eval()
    dec = model.super_link.decoders[task]
    dec.test_cfg.update(guidance_scale=scales[0], image_guidance_scale=scales[1])
    calls = UNetInputs(dec.unet)
    with torch.no_grad():
        run(model, [(gen_sample if task == 'gen' else edit_sample)(i) for i in range(2)],
            'predict')
    assert len(calls.shapes) == dec.test_cfg['num_steps']
    assert {s[0] for s in calls.shapes} == {2 * copies}


def test_noise_repeats_share_a_samples_condition_and_source_across_noise_levels():
    model = build()
    dec = model.super_link.decoders['edit']
    dec.noise_repeats, dec.cond_dropout, dec.source_dropout = 3, 0.0, 0.0
    seen = []
    dec.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0], args[1], kwargs['encoder_hidden_states'])),
        with_kwargs=True)
    samples = [edit_sample(0), edit_sample(1)]
    losses = run(model, samples, 'loss')
    (x, steps, cond), = seen
    assert x.shape[0] == steps.shape[0] == cond.shape[0] == 6
    src = dec.encode(torch.stack([s.source_image for s in samples]))
    for i in range(2):  # rows 3i..3i+2 are sample i: its condition and source, three noises
        rows = slice(3 * i, 3 * i + 3)
        assert torch.equal(cond[rows], cond[3 * i].expand(3, -1, -1))
        assert torch.equal(x[rows, dec.latent_channels:], src[i].expand(3, -1, -1, -1))
    assert not torch.equal(cond[0], cond[3])
    assert not torch.equal(x[0, :dec.latent_channels], x[1, :dec.latent_channels])
    losses['edit.loss_diffusion'].backward()
    assert model.super_link.queries['edit'].weight.grad.abs().sum() > 0


def test_denoising_loss_trains_the_unet_from_a_condition_given_directly():
    """The fixed-condition benchmark's path: no LLM, the condition is any (B, 77, width)."""
    dec = build().super_link.decoders['gen']
    cond = torch.randn(2, 77, dec.unet.config.cross_attention_dim, requires_grad=True)
    dec.cond_dropout = 0.0
    loss = dec.denoising_loss(cond, [gen_sample(0), gen_sample(1)])
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert cond.grad.abs().sum() > 0 and dec.unet.conv_in.weight.grad.abs().sum() > 0
    sample = gen_sample(2)
    del sample.target_image
    with pytest.raises(ValueError, match='sample g2 has no target_image'):
        dec.denoising_loss(cond[:1], [sample])


@pytest.mark.parametrize('noise', [NOISE, V_NOISE], ids=['epsilon', 'v_prediction'])
def test_min_snr_weights_each_samples_loss_by_its_noise_level(noise):
    dec = build(noise=noise).super_link.decoders['gen']
    dec.cond_dropout, dec.snr_gamma = 0.0, 5.0
    a = dec.scheduler.alphas_cumprod
    steps = torch.tensor([0, 30, 60, 99])
    snr = a[steps] / (1 - a[steps])
    denom = snr + 1 if noise is V_NOISE else snr
    expected = torch.minimum(snr, torch.tensor(5.0)) / denom
    assert torch.allclose(dec.snr_weights(steps), expected.float(), rtol=1e-4)
    assert dec.snr_weights(steps).max() <= 1.0 + 1e-6  # clipped where the SNR exceeds γ
    seen = []
    dec.unet.register_forward_hook(
        lambda m, args, kwargs, out: seen.append((args[0], args[1], out.sample)),
        with_kwargs=True)
    samples = [gen_sample(0), gen_sample(1), gen_sample(2)]
    cond = torch.randn(3, 77, dec.unet.config.cross_attention_dim)
    torch.manual_seed(1)
    loss = dec.denoising_loss(cond, samples)
    (noisy, t, pred), = seen
    x0 = dec.encode(torch.stack([s.target_image for s in samples]))
    alpha, sigma = a[t].sqrt()[:, None, None, None], (1 - a[t]).sqrt()[:, None, None, None]
    eps = (noisy - alpha * x0) / sigma  # the noise drawn, recovered from the noisy input
    goal = alpha * eps - sigma * x0 if noise is V_NOISE else eps
    per_sample = ((pred - goal) ** 2).mean((1, 2, 3))
    assert torch.allclose(loss, (per_sample * dec.snr_weights(t)).mean(), rtol=1e-3)
    assert not torch.allclose(loss, per_sample.mean(), rtol=1e-3)


def test_snr_gamma_must_be_positive_naming_the_key():
    from vlm2.plugins.diffusion import TextToImageDecoder
    with pytest.raises(ValueError, match=r'gen\.snr_gamma must be > 0'):
        TextToImageDecoder(32, unet=tiny_unet(12, 12), scheduler=NOISE, pixel_patch=2,
                           image_size=SIZE, conditioner=dict(num_heads=2), snr_gamma=0.0,
                           key='model.super_link.decoders.gen')


def test_noise_repeats_below_one_fail_naming_the_key():
    from vlm2.plugins.diffusion import TextToImageDecoder
    with pytest.raises(ValueError, match=r'gen\.noise_repeats must be ≥ 1, got 0'):
        TextToImageDecoder(32, unet=tiny_unet(12, 12), scheduler=NOISE, pixel_patch=2,
                           image_size=SIZE, conditioner=dict(num_heads=2), noise_repeats=0,
                           key='model.super_link.decoders.gen')


def test_editing_unet_takes_exactly_8_input_channels_with_a_vae():
    model = build(edit_vae=True)
    dec = model.super_link.decoders['edit']
    assert dec.unet.config.in_channels == 8 and dec.unet.conv_in.in_channels == 8
    calls = UNetInputs(dec.unet)
    run(model, [edit_sample(0)], 'loss')
    model.eval()
    with torch.no_grad():
        out = run(model, [edit_sample(0)], 'predict')
    assert {s[1] for s in calls.shapes} == {8}
    assert out[0].pred_image.shape == (SIZE, SIZE, 3)


def test_wrong_unet_channels_fail_naming_the_key():
    from vlm2.plugins.diffusion import ImageEditDecoder
    with pytest.raises(ValueError, match=r'edit\.unet: in_channels must be 8'):
        ImageEditDecoder(32, unet=tiny_unet(4, 4), vae=TINY_VAE, scheduler=NOISE,
                         image_size=SIZE, conditioner=dict(num_heads=2),
                         key='model.super_link.decoders.edit')


def test_pretrained_text_to_image_unet_is_widened_to_8_channels_at_zero(tmp_path):
    from diffusers import UNet2DConditionModel
    from vlm2.plugins.diffusion import ImageEditDecoder, TextToImageDecoder
    UNet2DConditionModel(**tiny_unet(4, 4)['config']).save_pretrained(tmp_path / 'unet')
    pretrained = dict(pretrained=str(tmp_path), subfolder='unet')
    gen = TextToImageDecoder(32, unet=pretrained, vae=TINY_VAE, scheduler=NOISE,
                             image_size=SIZE, conditioner=dict(num_heads=2))
    assert not any(p.requires_grad for p in gen.unet.parameters())  # paper: frozen for [GEN]
    edit = ImageEditDecoder(32, unet=pretrained, vae=TINY_VAE, scheduler=NOISE,
                            image_size=SIZE, conditioner=dict(num_heads=2))
    w = edit.unet.conv_in.weight
    assert w.shape[1] == 8 and torch.all(w[:, 4:] == 0)
    assert torch.equal(w[:, :4], gen.unet.conv_in.weight)
    assert all(p.requires_grad for p in edit.unet.parameters())  # trained for editing


TINY_TEXT_ENCODER = dict(config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2),
                         tokenizer=dict(type='WordLevelTokenizer', words=WORDS), seed=0)


def test_alignment_loss_against_a_frozen_text_encoder_trains_the_link_only():
    import vlm2.plugins.diffusion  # noqa: F401
    init_default_scope('vlm2')
    torch.manual_seed(0)
    decs = decoders()
    decs['gen'].update(text_encoder=TINY_TEXT_ENCODER, align_weight=0.5)
    cfg = tiny_model_cfg(decoders=decs)
    cfg['tokenizer'] = dict(type='WordLevelTokenizer', words=WORDS)
    model = MODELS.build(cfg)
    dec = model.super_link.decoders['gen']
    a, b = gen_sample(0), gen_sample(1)
    b.caption = 'a blue circle'
    target = dec.text_encoder([a.caption, b.caption])
    assert target.shape == (2, 77, 16) and not torch.allclose(target[0], target[1])
    losses = run(model, [a, b], 'loss')
    assert losses['gen.loss_align'] > 0
    losses['gen.loss_align'].backward()
    assert model.super_link.queries['gen'].weight.grad.abs().sum() > 0
    assert model.llm.model.layers[-1].mlp.up_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in dec.text_encoder.parameters())
    model.train()
    assert not dec.text_encoder.model.training  # frozen, so always in eval mode


def test_contrastive_alignment_acts_where_captions_differ_and_queues_their_targets():
    from vlm2.plugins.diffusion.alignment import ContrastiveAlignment
    torch.manual_seed(0)
    align = ContrastiveAlignment(num_tokens=3, width=8, queue_size=4, temperature=0.1)
    target = torch.randn(2, 3, 8)
    target[1, :2] = target[0, :2]  # the captions differ at their last token only
    cond = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    align(cond, target).backward()
    assert not cond.grad[:, :2].any() and cond.grad[:, 2].abs().sum() > 0
    assert int(align.filled) == 2 and torch.equal(align.queue[:2], target)
    # its own caption's tokens score lower than another's
    other = torch.randn(2, 3, 8)
    with torch.no_grad():
        assert align(target, target) < align(other, target)
    assert int(align.filled) == 4 and int(align.ptr) == 2  # 6 targets in 4 places: wrapped
    align(target[:1] + 1, target[:1] + 1)
    assert torch.equal(align.queue[2], target[0] + 1) and int(align.filled) == 4
    align.eval()  # evaluation does not change the queue
    align(cond.detach(), other)
    assert torch.equal(align.queue[3], target[1]) and int(align.ptr) == 3


def test_contrastive_alignment_loss_reaches_the_link_and_needs_a_text_encoder():
    import vlm2.plugins.diffusion  # noqa: F401
    init_default_scope('vlm2')
    torch.manual_seed(0)
    decs = decoders()
    decs['gen'].update(align_contrast=dict(weight=2.0, queue_size=8))
    cfg = tiny_model_cfg(decoders=decs)
    cfg['tokenizer'] = dict(type='WordLevelTokenizer', words=WORDS)
    with pytest.raises(ValueError,
                       match=r'TextToImageDecoder>.align_contrast needs a text_encoder'):
        MODELS.build(cfg)
    decs['gen'].update(text_encoder=TINY_TEXT_ENCODER)
    model = MODELS.build(tiny_model_cfg(decoders=decs) | dict(tokenizer=cfg['tokenizer']))
    a, b = gen_sample(0), gen_sample(1)
    b.caption = 'a blue circle'
    losses = run(model, [a, b], 'loss')
    assert losses['gen.loss_align_contrast'] > 0
    losses['gen.loss_align_contrast'].backward()
    assert model.super_link.queries['gen'].weight.grad.abs().sum() > 0
    assert int(model.super_link.decoders['gen'].contrast.filled) == 2


def test_condition_probe_scores_the_tokens_where_texts_differ_by_word():
    from vlm2.plugins.diffusion.builders import FrozenTextEncoder
    from vlm2.plugins.diffusion.condition_probe import condition_accuracy
    init_default_scope('vlm2')
    # zero layers, as the tiny recipes': each token is its word at its place
    enc = FrozenTextEncoder('enc', **dict(TINY_TEXT_ENCODER, config=dict(
        TINY_TEXT_ENCODER['config'], num_hidden_layers=0)))
    texts = ['a red circle', 'a blue circle', 'a red circle']
    target = enc(texts)
    exact = condition_accuracy(target, texts, enc)
    # the colour token (2nd) differs, 'a' and 'circle' and the padding do not
    assert exact['num_tokens'] == 3 and exact['accuracy'] == 1.0
    assert set(exact['by_word']) == {'red', 'blue'}
    swapped = target.clone()
    swapped[1, 1] = target[0, 1]  # the blue caption's condition says red
    out = condition_accuracy(swapped, texts, enc)
    assert out['by_word']['blue'] == dict(accuracy=0.0, num=1)
    assert out['by_word']['red'] == dict(accuracy=1.0, num=2)
    with pytest.raises(ValueError, match='2 conditions for 3 texts'):
        condition_accuracy(target[:2], texts, enc)


def test_condition_recorder_sees_what_the_decoder_predicts_from():
    from vlm2.plugins.diffusion.condition_probe import ConditionRecorder
    model = build()
    dec = model.super_link.decoders['gen']
    rec = ConditionRecorder(dec)
    model.eval()
    with torch.no_grad():
        out = run(model, [gen_sample(0), gen_sample(1)], 'predict')
    assert all(s.get('pred_image') is not None for s in out)
    assert rec.texts == ['a red circle'] * 2 and rec.conds[0].shape == (2, 77, 16)
    assert rec.accuracy() is None  # no text encoder to compare with
    rec.remove()
    assert dec.predict.__func__ is type(dec).predict


def test_edit_reply_without_an_image_to_edit_gets_no_picture_and_a_warning(monkeypatch):
    from vlm2.plugins.diffusion import decoder as decoder_module
    logged = []
    monkeypatch.setattr(decoder_module, 'print_log', lambda msg, **kw: logged.append(msg))
    model = build(edit_vae=True)
    dec = model.super_link.decoders['edit']
    with_image, without = edit_sample(0), edit_sample(1)
    del without.source_image  # and no img_path: a text-only prompt answered with [EDIT]
    states = torch.randn(2, dec.num_queries, model.llm.config.hidden_size)
    dec._states = lambda phrases, training: states[:len(phrases)]
    out = dec.predict([None, None], [with_image, without])
    assert out[0].pred_image.shape == (SIZE, SIZE, 3) and 'pred_image' not in out[1]
    assert any('1 of 2 samples have no image to edit' in m for m in logged)


def test_teacher_condition_replaces_the_links_in_the_denoising_loss_only():
    import vlm2.plugins.diffusion  # noqa: F401
    init_default_scope('vlm2')
    torch.manual_seed(0)
    decs = decoders()
    decs['gen'].update(text_encoder=TINY_TEXT_ENCODER, teacher_prob=1.0, cond_dropout=0.0)
    cfg = tiny_model_cfg(decoders=decs)
    cfg['tokenizer'] = dict(type='WordLevelTokenizer', words=WORDS)
    cfg['test_cfg'] = dict(routing='forced')
    model = MODELS.build(cfg)
    dec = model.super_link.decoders['gen']
    seen = []
    dec.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs['encoder_hidden_states'].detach()),
        with_kwargs=True)
    a, b = gen_sample(0), gen_sample(1)
    b.caption = 'a blue circle'
    losses = run(model, [a, b], 'loss')
    assert torch.equal(seen[0], dec.text_encoder([a.caption, b.caption]))
    # the link learns from the alignment loss only; the diffusion loss trains the UNet
    losses['gen.loss_diffusion'].backward(retain_graph=True)
    grad = model.super_link.queries['gen'].weight.grad
    assert grad is None or not grad.any()
    assert dec.unet.conv_in.weight.grad.abs().sum() > 0
    losses['gen.loss_align'].backward()
    assert model.super_link.queries['gen'].weight.grad.abs().sum() > 0
    # at inference the UNet reads the link's condition
    seen.clear()
    model.eval()
    with torch.no_grad():
        run(model, [a], 'predict')
    assert seen and not any(torch.equal(c[:1], dec.text_encoder([a.caption])) for c in seen)


@pytest.mark.parametrize('kwargs, match', [
    (dict(teacher_prob=0.5), 'needs a text_encoder'),
    (dict(teacher_prob=1.5, text_encoder=TINY_TEXT_ENCODER), r'teacher_prob must be in \[0, 1\]')])
def test_teacher_prob_is_checked_naming_the_key(kwargs, match):
    import vlm2.plugins.diffusion  # noqa: F401
    init_default_scope('vlm2')
    decs = decoders()
    decs['gen'].update(kwargs)
    cfg = tiny_model_cfg(decoders=decs)
    cfg['tokenizer'] = dict(type='WordLevelTokenizer', words=WORDS)
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


def test_denoise_interval_runs_the_unet_on_every_nth_step_and_aligns_on_every_step():
    decs = decoders()
    decs['edit'].update(text_encoder=TINY_TEXT_ENCODER, denoise_interval=3)
    model = build(decs=decs)
    dec = model.super_link.decoders['edit']
    calls = UNetInputs(dec.unet)
    keys = []
    for _ in range(4):
        losses = run(model, [edit_sample(0), edit_sample(1)], 'loss')
        keys.append(sorted(k for k in losses if k.startswith('edit.')))
        if 'edit.loss_diffusion' not in losses:  # a step between: the link learns to align
            losses['edit.loss_align'].backward()
            assert model.super_link.queries['edit'].weight.grad.abs().sum() > 0
            assert dec.unet.conv_in.weight.grad is None
    with_unet = ['edit.loss_align', 'edit.loss_diffusion']
    assert keys == [with_unet, ['edit.loss_align'], ['edit.loss_align'], with_unet]
    assert len(calls.shapes) == 2  # one UNet pass on steps 1 and 4, none between
    # without a text encoder a step between would have no loss at all
    decs = decoders()
    decs['edit'].update(denoise_interval=2)
    with pytest.raises(ValueError, match=r'denoise_interval must be ≥ 1, and 1 without'):
        build(decs=decs)


def test_config_built_text_encoder_is_seeded_and_matches_its_saved_folder(tmp_path):
    from vlm2.plugins.diffusion.builders import FrozenTextEncoder
    state = torch.random.get_rng_state()
    enc = FrozenTextEncoder(key='k', **TINY_TEXT_ENCODER)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    again = FrozenTextEncoder(key='k', **TINY_TEXT_ENCODER)
    other = FrozenTextEncoder(key='k', **dict(TINY_TEXT_ENCODER, seed=1))
    texts = ['a red circle', 'make the circle blue']
    assert torch.equal(enc(texts), again(texts))
    assert not torch.allclose(enc(texts), other(texts))
    enc.model.save_pretrained(tmp_path / 'text_encoder')  # the SD folder layout
    enc.tokenizer.save_pretrained(tmp_path / 'tokenizer')
    loaded = FrozenTextEncoder(key='k', pretrained=str(tmp_path))
    assert torch.allclose(loaded(texts), enc(texts))
    with pytest.raises(ValueError, match=r'k: give exactly one of pretrained='):
        FrozenTextEncoder(key='k', pretrained=str(tmp_path), config=TINY_TEXT_ENCODER['config'])
    with pytest.raises(ValueError, match=r'k: a config= text encoder needs tokenizer='):
        FrozenTextEncoder(key='k', config=TINY_TEXT_ENCODER['config'])


def test_conditioner_follows_the_unets_cross_attention_dim():
    model = build()
    cond = model.super_link.decoders['gen'].conditioner(torch.randn(3, 64, 64))
    assert cond.shape == (3, 77, 16)
    assert model.super_link.queries['gen'].weight.shape == (64, 64)  # 64 queries per table


def test_format_results_and_draw():
    model = build().eval()
    dec = model.super_link.decoders['edit']
    with torch.no_grad():
        s = run(model, [edit_sample(0)], 'predict')[0]
    res = dec.format_results(s)
    assert res['task'] == '[EDIT]' and res['size'] == [SIZE, SIZE]
    import base64
    png = mmcv.imfrombytes(base64.b64decode(res['png_base64']), channel_order='rgb')
    assert np.array_equal(png, s.pred_image)
    pic = dec.draw(np.zeros((40, 40, 3), np.uint8), s)
    assert pic.shape[0] == SIZE and pic.shape[1] > 2 * SIZE  # source | edited
    assert np.array_equal(pic[:, -SIZE:], s.pred_image)


# ---- adapters and image loading ---------------------------------------------------------
def _png(path, size, color=(200, 30, 30), box=None):
    img = np.full((size[1], size[0], 3), 240, np.uint8)
    if box:
        x0, y0, x1, y1 = box
        img[y0:y1, x0:x1] = color
    mmcv.imwrite(img[..., ::-1], str(path))
    return img


def test_caption_pairs_from_jsonl_and_from_a_folder(tmp_path):
    (tmp_path / 'imgs').mkdir()
    for i in range(2):
        _png(tmp_path / 'imgs' / f'{i}.png', (8, 8))
        (tmp_path / 'imgs' / f'{i}.txt').write_text(f'a red circle {i}')
    with open(tmp_path / 'caps.jsonl', 'w') as f:
        f.write(json.dumps(dict(image='0.png', caption='a red circle')) + '\n')
    a = CaptionImageDataset(ann_file=str(tmp_path / 'caps.jsonl'),
                            data_prefix=dict(img_path=str(tmp_path / 'imgs')))
    b = CaptionImageDataset(ann_file='', data_prefix=dict(img_path=str(tmp_path / 'imgs')))
    info = a.get_data_info(0)
    assert info['target_path'].endswith('imgs/0.png') and info['img_path'] is None
    assert info['conversation'][1]['value'] == '[GEN]'
    assert 'a red circle' in info['conversation'][0]['value']
    assert [b.get_data_info(i)['caption'] for i in range(2)] == ['a red circle 0',
                                                                 'a red circle 1']
    (tmp_path / 'imgs' / '1.txt').unlink()
    with pytest.raises(FileNotFoundError, match='1.png has no caption file'):
        CaptionImageDataset(ann_file='', data_prefix=dict(img_path=str(tmp_path / 'imgs')))


def test_triplets_and_their_conversation(tmp_path):
    recs = [dict(source='s.png', instruction='make the circle blue', target='t.png',
                 edit_type='recolor')]
    (tmp_path / 'e.json').write_text(json.dumps(recs))
    ds = InstructEditDataset(ann_file=str(tmp_path / 'e.json'),
                             data_prefix=dict(img_path=str(tmp_path)))
    info = ds.get_data_info(0)
    assert info['img_path'] == info['source_path'] and info['edit_type'] == 'recolor'
    assert info['conversation'][0]['value'].startswith('<image>\n')
    assert info['conversation'][1]['value'] == '[EDIT]'
    (tmp_path / 'bad.json').write_text(json.dumps([dict(source='s.png', target='t.png')]))
    with pytest.raises(ValueError, match=r"bad.json: record 0 lacks \['instruction'\]"):
        InstructEditDataset(ann_file=str(tmp_path / 'bad.json'))


def test_triplet_of_different_sizes_is_resized_or_fails_clearly(tmp_path):
    # the same scene at two resolutions: a box in the left half
    _png(tmp_path / 's.png', (64, 32), box=(8, 8, 24, 24))
    _png(tmp_path / 't.png', (32, 16), box=(4, 4, 12, 12))
    info = dict(source_path=str(tmp_path / 's.png'), target_path=str(tmp_path / 't.png'))
    with pytest.raises(ValueError, match=r's.png is 64x32 but target .*t.png is 32x16'):
        LoadDiffusionImages(size=16, on_size_mismatch='error').transform(dict(info))
    load = LoadDiffusionImages(size=16, on_size_mismatch='resize')
    out = load.transform(dict(info))
    src, tgt = out['source_image'], out['target_image']
    assert src.shape == tgt.shape == (3, 16, 16) and load.num_resized == 1
    # aligned: the red box covers the same pixels in both
    assert torch.equal(src[1] < 150, tgt[1] < 150) and bool((tgt[1] < 150).any())


# ---- analyser and metrics ----------------------------------------------------------------
def _scene(rng, size=64):
    shape = sample_shape(rng, size)
    return Scene(size, (240, 240, 240), [shape]), shape


def test_analyser_reads_noisy_renders_back():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(30):
        scene, shape = _scene(rng)
        img = scene.render().astype(np.float32) + rng.normal(0, 20, (64, 64, 3))
        img = np.clip(img, 0, 255).astype(np.uint8)
        caption = f'a {shape.size} {shape.color} {shape.kind} ' \
                  f'{_phrase(scene.position(0))}'
        hits += check_generation(analyse_image(img), parse_objects(caption))['faithful']
    assert hits >= 27
    # a wrong colour or an empty picture is not faithful
    scene, shape = _scene(rng)
    asked = parse_objects(f'a {shape.color} {shape.kind}')
    assert not check_generation(analyse_image(np.full((64, 64, 3), 240, np.uint8)),
                                asked)['faithful']


def _phrase(position):
    from vlm2.datasets.shapes_world.vocab import POSITION_PHRASES
    return POSITION_PHRASES[position]


def test_edit_check_wants_exactly_the_reference_shapes():
    rng = np.random.default_rng(1)
    scene, _ = _scene(rng)
    ref = analyse_image(scene.render())
    assert check_edit(analyse_image(scene.render()), ref)['correct']
    other = Scene(64, scene.background, scene.shapes + [sample_shape(rng, 64)])
    assert not check_edit(analyse_image(other.render()), ref)['correct']  # one too many


def test_edit_check_takes_an_added_shape_anywhere_in_its_asked_cell():
    from dataclasses import replace
    kept = Shape('circle', 'green', 'large', 46.0, 46.0, 9.0)  # bottom right
    new = Shape('star', 'red', 'small', 9.0, 9.0, 5.0)  # added at the top left
    background = (240, 240, 240)
    ref = analyse_image(Scene(64, background, [kept, new]).render())
    added = parse_objects('add a small red star at the top left')[0]

    def check(*shapes, **kw):
        return check_edit(analyse_image(Scene(64, background, list(shapes)).render()),
                          ref, **kw)['correct']
    assert check(kept, new, added=added) and check(kept, new)
    elsewhere_in_cell = replace(new, cx=18.0, cy=18.0)  # 0.2 of the side from the reference
    assert check(kept, elsewhere_in_cell, added=added)
    assert not check(kept, elsewhere_in_cell)  # the reference-centroid rule
    assert not check(kept, replace(new, cx=50.0, cy=9.0), added=added)  # top right
    assert not check(kept, replace(new, color='blue'), added=added)
    assert not check(kept, replace(new, kind='square'), added=added)
    assert not check(elsewhere_in_cell, added=added)  # the kept shape is gone
    assert not check(replace(kept, cx=18.0), elsewhere_in_cell, added=added)  # it moved
    assert not check(kept, elsewhere_in_cell, replace(new, cx=40.0, cy=12.0, color='blue'),
                     added=added)  # one too many
    # the metric parses the added object from an addition's instruction
    sample = dict(task='edit', edit_type='add',
                  instruction='put a small red star at the top left',
                  target_image=Scene(64, background, [kept, new]).render(),
                  pred_image=Scene(64, background, [kept, elsewhere_in_cell]).render())
    for add_place, accuracy in (('cell', 1.0), ('reference', 0.0)):
        metric = ShapesGenerationMetric(add_place=add_place)
        metric.process({}, [sample])
        assert metric.compute_metrics(metric.results)['edit_accuracy_add'] == accuracy
    with pytest.raises(ValueError, match='names no ShapesWorld object'):
        ShapesGenerationMetric().process({}, [dict(sample, instruction='add something')])
    with pytest.raises(ValueError, match="add_place must be 'cell' or 'reference'"):
        ShapesGenerationMetric(add_place='centre')


def test_shapes_metric_scores_predictions():
    rng = np.random.default_rng(2)
    metric = ShapesGenerationMetric()
    samples = []
    for i in range(4):
        scene, shape = _scene(rng)
        img = scene.render()
        caption = f'a {shape.color} {shape.kind} {_phrase(scene.position(0))}'
        good = i % 2 == 0
        samples.append(dict(task='gen', caption=caption, sample_id=str(i),
                            target_image=torch.from_numpy(img).permute(2, 0, 1),
                            pred_image=img if good else np.full_like(img, 240)))
    samples.append(dict(task='edit', target_image=torch.from_numpy(img).permute(2, 0, 1),
                        pred_image=img, edit_type='recolor'))
    samples.append(dict(task='edit', target_image=torch.from_numpy(img).permute(2, 0, 1),
                        edit_type='add'))  # no image: the routing token was not generated
    metric.process({}, samples)
    out = metric.compute_metrics(metric.results)
    assert out['gen_faithfulness'] == 0.5 and out['gen_reference_faithfulness'] == 1.0
    assert out['edit_accuracy'] == 0.5 and out['edit_no_image'] == 1
    assert out['edit_accuracy_recolor'] == 1.0 and out['edit_accuracy_add'] == 0.0


@pytest.mark.parametrize('cls, key', [(CLIPScoreMetric, 'clip_model'),
                                      (FIDMetric, 'inception_weights')])
def test_clip_score_and_fid_are_skipped_with_a_clear_message(cls, key, tmp_path, caplog):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('test_diffusion_skip')
    metric = cls()
    assert metric.skip_reason == f'no {key} configured'
    img = np.zeros((8, 8, 3), np.uint8)
    metric.process({}, [dict(task='gen', pred_image=img, caption='a red circle',
                             target_image=torch.zeros(3, 8, 8, dtype=torch.uint8))])
    assert metric.compute_metrics(metric.results) == {}
    with pytest.raises(FileNotFoundError, match=f'{key}.*does not exist'):
        cls(**{key: str(tmp_path / 'missing')})
    import importlib.util
    if any(importlib.util.find_spec(m) is None for m in cls.needs):
        (tmp_path / 'w').mkdir()
        assert 'torchmetrics[image]' in cls(**{key: str(tmp_path / 'w')}).skip_reason


def test_tiny_recipe_builds_pixel_space_decoders_at_64px():
    from mmengine.config import Config
    import vlm2.plugins.diffusion  # noqa: F401
    init_default_scope('vlm2')
    cfg = Config.fromfile('vlm2/plugins/diffusion/configs/visionllmv2_tiny_shapes_gen.py')
    assert 'vlm2.plugins.chat' in cfg.custom_imports['imports']
    gen = MODELS.build(cfg.model.super_link.decoders.gen, default_args=dict(llm_hidden_size=256))
    edit = MODELS.build(cfg.model.super_link.decoders.edit,
                        default_args=dict(llm_hidden_size=256))
    assert gen.vae is None and gen.unet.config.in_channels == 12  # 64 px folded 2x2
    assert edit.unet.config.in_channels == 24 and edit.num_queries == gen.num_queries == 64
    for dec in (gen, edit):  # the pooled condition path, four noise levels, the alignment
        assert dec.unet.add_embedding is not None and dec.noise_repeats == 4
        assert dec.text_encoder.model.config.num_hidden_layers == 0 and dec.align_weight == 1
        assert dec.teacher_prob == 0.5
    with torch.no_grad():
        img = gen.generate(gen.conditioner.unconditional(1), num_steps=2)
    assert img.shape == (1, 64, 64, 3)


def test_tiny_recipe_trains_the_link_at_a_tenth_of_the_unets_rate():
    base, rates, covered = recipe_rates(
        'vlm2/plugins/diffusion/configs/visionllmv2_tiny_shapes_gen.py',
        lambda m: dict(llm=m.llm, gen_table=m.super_link.queries['gen'],
                       conditioner=m.super_link.decoders['edit'].conditioner,
                       unet=m.super_link.decoders['gen'].unet, projector=m.projector))
    assert rates == dict(llm={base / 10}, gen_table={base / 10}, conditioner={base / 10},
                         unet={base}, projector={base})
    assert covered


@pytest.mark.parametrize('noise', [NOISE, V_NOISE], ids=['epsilon', 'v_prediction'])
@pytest.mark.parametrize('sampler', ['DDIMScheduler', 'DPMSolverMultistepScheduler'])
def test_sampling_with_an_oracle_noise_predictor_returns_its_image(sampler, noise):
    from vlm2.plugins.diffusion.builders import sampler_class
    dec = build(noise=noise).super_link.decoders['gen']
    dec.sampler_cls = sampler_class(sampler, 'sampler')
    image = torch.full((1, 3, SIZE, SIZE), 240, dtype=torch.uint8)
    image[:, 0, 2:9, 3:10], image[:, 1:, 2:9, 3:10] = 200, 30
    x0, alpha_bar = dec.encode(image), dec.scheduler.alphas_cumprod

    def oracle(x, t, cond, source):
        a = alpha_bar[int(t)]
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if noise is NOISE else a.sqrt() * eps - (1 - a).sqrt() * x0
    dec._unet = oracle
    out = dec.generate(torch.zeros(1, 77, 16), num_steps=5, guidance_scale=1.0)
    assert (out[0].permute(2, 0, 1).int() - image[0].int()).abs().max() <= 1


def test_benchmark_trains_and_scores_only_the_decoders_asked_for(tmp_path):
    import argparse
    from vlm2.plugins.diffusion.benchmark import RECIPE, build_cfg, parse_phases
    subsets = {f'{n}_{s}': dict(path=str(tmp_path / f'{n}_{s}.jsonl'), num=1)
               for n in ('captions', 'edits') for s in ('train', 'val')}
    args = argparse.Namespace(config=RECIPE, data_root=str(tmp_path), work_dir=str(tmp_path),
                              batch_size=4, max_iters=10, seed=0, link_lr_mult=None,
                              cfg_options={}, tasks=['gen'], lr_schedule='iters')
    cfg = build_cfg(args, subsets)
    assert [d.task for d in cfg.train_dataloader.dataset.datasets] == ['gen']
    assert [d.ann_file for d in cfg.val_dataloader.dataset.datasets] == \
        [subsets['captions_val']['path']]
    assert cfg.train_dataloader.dataset.ratios == [1.0] and cfg.train_cfg.max_iters == 10
    assert cfg.param_scheduler[-1].end == 10  # the config's cosine over --max-iters
    args.tasks = ['gen', 'edit']
    assert [d.task for d in build_cfg(args, subsets).train_dataloader.dataset.datasets] == \
        ['gen', 'edit']
    # the default: BudgetHook sets the rate over the minutes; --max-iters 0 caps nothing
    args.lr_schedule, args.max_iters = 'time', 0
    cfg = build_cfg(args, subsets)
    assert cfg.param_scheduler == [] and cfg.train_cfg.max_iters >= 10 ** 9
    args.lr_schedule = 'iters'
    with pytest.raises(SystemExit, match='--max-iters'):
        build_cfg(args, subsets)
    # --task-phases: a curriculum for TaskMixHook
    tasks = ['gen', 'edit']
    assert parse_phases(['0:gen=1', '0.3:gen=1,edit=2'], tasks) == [
        dict(start=0.0, weights=dict(gen=1.0)), dict(start=0.3, weights=dict(gen=1.0, edit=2.0))]
    with pytest.raises(SystemExit, match='0.3-gen=1'):
        parse_phases(['0.3-gen=1'], tasks)
    with pytest.raises(SystemExit, match=r"\['edt'\] not among"):
        parse_phases(['0:edt=1'], tasks)


def test_benchmark_writes_its_one_shape_world_only_when_missing(tmp_path, monkeypatch):
    from vlm2.plugins.diffusion import benchmark
    monkeypatch.setattr(benchmark, 'ONE_SHAPE_WORLD',
                        dict(benchmark.ONE_SHAPE_WORLD, num_train=6, num_val=2))
    root = tmp_path / 'sw1'
    benchmark.ensure_one_shape_world(str(root))
    subsets = benchmark.one_shape_subsets(str(root), str(tmp_path))
    assert subsets['captions_train']['num'] == 6 and subsets['edits_val']['num'] == 2
    stamp = (root / 'meta.json').stat().st_mtime_ns
    benchmark.ensure_one_shape_world(str(root))  # already there: left as it is
    assert (root / 'meta.json').stat().st_mtime_ns == stamp


def test_vae_pretraining_writes_a_folder_the_latent_recipe_builds_from(tmp_path, monkeypatch):
    from mmengine.config import Config
    import vlm2.plugins.diffusion  # noqa: F401
    from vlm2.datasets.shapes_world import generate_shapes_world
    from vlm2.plugins.diffusion import benchmark, vae_pretrain
    root, folder = tmp_path / 'sw1', tmp_path / 'vae'
    generate_shapes_world(str(root), seed=0, num_train=4, num_val=2, max_shapes=1)
    report = vae_pretrain.pretrain_vae(str(root), str(folder), minutes=5, decoder_minutes=5,
                                       max_iters=2, batch_size=2)
    assert report['whole']['iterations'] == report['decoder']['iterations'] == 2
    assert report['latent_shape'] == [4, 16, 16]
    assert (folder / 'reconstructions.png').is_file()
    assert 'gen_faithfulness' in report['analyser_on_reconstructions']
    assert 'edit_accuracy' in report['analyser_on_edit_target_reconstructions']
    # the decoder stage alone, from the folder, keeps the latent space
    from diffusers import AutoencoderKL
    again = vae_pretrain.pretrain_vae(str(root), str(tmp_path / 'vae2'), minutes=0,
                                      decoder_minutes=5, max_iters=1, batch_size=2,
                                      vae=str(folder))
    assert 'whole' not in again and again['decoder']['iterations'] == 1
    before, after = (AutoencoderKL.from_pretrained(str(f)) for f in (folder, tmp_path / 'vae2'))
    assert after.config.scaling_factor == before.config.scaling_factor
    assert all(torch.equal(a, b) for a, b in zip(before.encoder.parameters(),
                                                 after.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before.decoder.parameters(),
                                                     after.decoder.parameters()))
    init_default_scope('vlm2')
    cfg = Config.fromfile('vlm2/plugins/diffusion/configs/visionllmv2_tiny_shapes_gen_vae.py')
    for dec in cfg.model.super_link.decoders.values():
        dec.vae.pretrained = str(folder)
    gen, edit = (MODELS.build(cfg.model.super_link.decoders[k],
                              default_args=dict(llm_hidden_size=256)) for k in ('gen', 'edit'))
    assert gen.vae.config.scaling_factor == pytest.approx(report['scaling_factor'])
    assert (gen.latent_channels, gen.latent_size) == (4, 16)
    assert (gen.unet.config.in_channels, edit.unet.config.in_channels) == (4, 8)
    assert not gen.scheduler.config.clip_sample  # latents are not confined to [-1, 1]
    with torch.no_grad():
        assert gen.generate(gen.conditioner.unconditional(1), num_steps=2).shape == \
            (1, 64, 64, 3)
    # the benchmark pretrains a named VAE folder once, and only when it is missing
    calls = []
    monkeypatch.setattr(vae_pretrain, 'pretrain_vae',
                        lambda data_root, path, minutes: calls.append(path) or {})
    assert benchmark.ensure_pretrained(cfg, str(root), 1, 1) == {} and calls == []
    for dec in cfg.model.super_link.decoders.values():
        dec.vae.pretrained = str(tmp_path / 'missing')
    assert benchmark.ensure_pretrained(cfg, str(root), 1, 1) == {str(tmp_path / 'missing'): {}}
    assert calls == [str(tmp_path / 'missing')]


def test_sd_pretraining_noise_lands_on_the_caption_tokens_only():
    from vlm2.plugins.diffusion.sd_pretrain import noisy
    cond = torch.zeros(2, 77, 64)
    cond[:, :8] = torch.randn(2, 8, 64)  # 8 caption tokens, zero padding after them
    out = noisy(cond, torch.tensor([0.0, 0.5])[:, None, None], torch.Generator().manual_seed(0))
    assert torch.equal(out[0], cond[0])  # σ = 0: exact
    assert not out[1, 8:].any()  # the padding stays zero
    assert 0.4 < (out[1, :8] - cond[1, :8]).std() < 0.6


def test_sd_pretraining_writes_a_folder_the_pretrained_recipe_builds_from(tmp_path,
                                                                         monkeypatch):
    from mmengine.config import Config
    from transformers import CLIPTextModel
    import vlm2.plugins.diffusion  # noqa: F401
    from vlm2.plugins.diffusion.conditioner import SuperLinkConditioner
    from vlm2.datasets.shapes_world import generate_shapes_world
    from vlm2.plugins.diffusion import benchmark, ip2p_pretrain, sd_pretrain, vae_pretrain
    root, vae, sd = tmp_path / 'sw1', tmp_path / 'vae', tmp_path / 'sd'
    generate_shapes_world(str(root), seed=0, num_train=4, num_val=2, max_shapes=1)
    vae_pretrain.pretrain_vae(str(root), str(vae), minutes=5, decoder_minutes=0, max_iters=1,
                              batch_size=2)
    key = 'model.super_link.decoders.gen.'
    report = sd_pretrain.pretrain_sd(
        str(root), str(sd), minutes=5, max_iters=2, batch_size=2,
        cfg_options={key + 'vae.pretrained': str(vae), key + 'test_cfg.num_steps': 2})
    assert report['iterations'] == 2 and report['analyser_on_val_captions']['gen_num'] == 2
    assert report['analyser_on_noisy_val_captions']['gen_num'] == 2
    assert (sd / 'samples.png').is_file()
    init_default_scope('vlm2')
    cfg = Config.fromfile('vlm2/plugins/diffusion/configs/visionllmv2_tiny_shapes_gen_sd.py')
    for dec in cfg.model.super_link.decoders.values():
        dec.vae.pretrained = str(vae)
        dec.unet.pretrained = dec.text_encoder.pretrained = str(sd)
    gen, edit = (MODELS.build(cfg.model.super_link.decoders[k],
                              default_args=dict(llm_hidden_size=256)) for k in ('gen', 'edit'))
    # the paper's split: the [GEN] UNet frozen, the [EDIT] UNet trained from the same weights
    # with its 4 new input channels at zero
    assert not any(p.requires_grad for p in gen.unet.parameters())
    assert all(p.requires_grad for p in edit.unet.parameters())
    assert edit.unet.config.in_channels == 8 and gen.teacher_prob == 0.0
    assert torch.equal(edit.unet.conv_in.weight[:, :4], gen.unet.conv_in.weight)
    assert not edit.unet.conv_in.weight[:, 4:].any()
    # the alignment target is the saved encoder's embedding through its saved tokenizer,
    # zero past the caption's end as in pretraining
    caption = 'a small red circle at the top left'
    saved = CLIPTextModel.from_pretrained(str(sd / 'text_encoder'))
    ids = gen.text_encoder.tokenize([caption])
    assert gen.text_encoder.tokenizer.convert_ids_to_tokens(ids[0, :3].tolist()) == \
        ['a', 'small', 'red']
    with torch.no_grad():
        target, full = gen.text_encoder([caption]), saved(ids).last_hidden_state
    assert torch.equal(target[:, :8], full[:, :8])  # the caption's 8 words
    assert not target[:, 8:].any() and full[:, 8:].abs().sum() > 0
    # the recipe's conditioner has no final LayerNorm, so its tokens are not each normalised
    # to unit variance over the channels (which would make a zero token impossible)
    states = torch.randn(2, 64, 256)
    with torch.no_grad():
        free = gen.conditioner(states).std(-1)
        normed = SuperLinkConditioner(256, 64, num_heads=4)(states).std(-1)
    assert torch.allclose(normed, torch.ones_like(normed), atol=0.01)
    assert (free - 1).abs().min() > 0.1
    # through the frozen UNet (which reads the flattened condition too), the denoising loss
    # still reaches the condition, so the super link learns
    assert gen.unet.config.class_embed_type == 'projection'
    cond = gen.text_encoder([caption]).requires_grad_(True)
    gen.latent_loss(cond, torch.randn(1, 4, 16, 16)).backward()
    assert cond.grad.abs().sum() > 0
    # the benchmark pretrains the VAE, then the shared SD folder once, in that VAE's latents
    calls = []
    monkeypatch.setattr(vae_pretrain, 'pretrain_vae',
                        lambda data_root, path, minutes: calls.append(('vae', path)) or {})
    monkeypatch.setattr(sd_pretrain, 'pretrain_sd',
                        lambda data_root, path, minutes, cfg_options: calls.append(
                            ('sd', path, cfg_options)) or {})
    assert benchmark.ensure_pretrained(cfg, str(root), 1, 1) == {} and calls == []
    for dec in cfg.model.super_link.decoders.values():
        dec.vae.pretrained, dec.unet.pretrained = 'no_vae', 'no_sd'
    assert set(benchmark.ensure_pretrained(cfg, str(root), 1, 1)) == {'no_vae', 'no_sd'}
    assert calls == [('vae', 'no_vae'),
                     ('sd', 'no_sd', {key + 'vae.pretrained': 'no_vae'})]
    # an editing UNet of its own is pretrained after the SD, from the SD's folder
    monkeypatch.setattr(ip2p_pretrain, 'pretrain_ip2p',
                        lambda data_root, path, sd, minutes, cfg_options: calls.append(
                            ('ip2p', path, sd, cfg_options)) or {})
    calls.clear()
    cfg.model.super_link.decoders.edit.unet.pretrained = 'no_ip2p'
    assert list(benchmark.ensure_pretrained(cfg, str(root), 1, 1)) == \
        ['no_vae', 'no_sd', 'no_ip2p']
    assert calls[1:] == [('sd', 'no_sd', {key + 'vae.pretrained': 'no_vae'}),
                         ('ip2p', 'no_ip2p', 'no_sd',
                          {'model.super_link.decoders.edit.vae.pretrained': 'no_vae'})]


def test_ip2p_pretraining_widens_the_sd_unet_and_writes_a_folder_the_recipe_reads(tmp_path):
    from mmengine.config import Config
    import vlm2.plugins.diffusion  # noqa: F401
    from vlm2.datasets.shapes_world import generate_shapes_world
    from diffusers import UNet2DConditionModel
    from vlm2.plugins.diffusion import ip2p_pretrain, sd_pretrain, vae_pretrain
    root, vae, sd, ip2p = (tmp_path / n for n in ('sw1', 'vae', 'sd', 'ip2p'))
    generate_shapes_world(str(root), seed=0, num_train=4, num_val=2, max_shapes=1)
    vae_pretrain.pretrain_vae(str(root), str(vae), minutes=5, decoder_minutes=0, max_iters=1,
                              batch_size=2)
    sd_pretrain.pretrain_sd(str(root), str(sd), minutes=5, max_iters=1, batch_size=2,
                            cfg_options={'model.super_link.decoders.gen.vae.pretrained':
                                         str(vae),
                                         'model.super_link.decoders.gen.test_cfg.num_steps': 2})
    with pytest.raises(FileNotFoundError, match='sd_pretrain.py'):
        ip2p_pretrain.pretrain_ip2p(str(root), str(ip2p), str(tmp_path / 'none'))
    key = 'model.super_link.decoders.edit.'
    # validated on another set's triplets (the benchmark's, beside a larger training set)
    val_root = tmp_path / 'sw1_val'
    generate_shapes_world(str(val_root), seed=1, num_train=1, num_val=3, max_shapes=1)
    report = ip2p_pretrain.pretrain_ip2p(
        str(root), str(ip2p), str(sd), minutes=5, max_iters=2, batch_size=2,
        cfg_options={key + 'vae.pretrained': str(vae), key + 'test_cfg.num_steps': 2},
        val_root=str(val_root))
    assert report['iterations'] == 2 and report['sd'] == str(sd)
    assert report['num_train'] == 4 and report['val_root'] == str(val_root)
    assert report['analyser_on_val_edits']['edit_num'] == 3
    assert (ip2p / 'samples.png').is_file()
    assert {p.name for p in ip2p.iterdir()} >= {'unet', 'text_encoder', 'tokenizer',
                                                'scheduler'}
    init_default_scope('vlm2')
    cfg = Config.fromfile('vlm2/plugins/diffusion/configs/visionllmv2_tiny_shapes_gen_ip2p.py')
    edit_cfg = cfg.model.super_link.decoders.edit
    assert edit_cfg.unet.pretrained == 'work_dirs/shapes_world_ip2p'
    edit_cfg.vae.pretrained, edit_cfg.text_encoder.pretrained = str(vae), str(sd)
    edit_cfg.unet.pretrained = str(ip2p)
    edit = MODELS.build(edit_cfg, default_args=dict(llm_hidden_size=256))
    sd_conv = UNet2DConditionModel.from_pretrained(str(sd), subfolder='unet').conv_in.weight
    # read as saved (8 channels, trained), not widened again; frozen, as the recipe says
    assert edit.unet.config.in_channels == 8
    assert edit.unet.conv_in.weight[:, 4:].abs().sum() > 0
    assert not torch.equal(edit.unet.conv_in.weight[:, :4], sd_conv)
    assert not any(p.requires_grad for p in edit.unet.parameters())
    assert edit.denoise_interval == 4 and edit.teacher_prob == 0.0
