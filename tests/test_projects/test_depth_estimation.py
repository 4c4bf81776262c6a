"""projects/depth_estimation: the [DEPTH] task, dropped in as a folder."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image

from conftest import ROOT, tiny_model_cfg

if ROOT not in sys.path:  # the tools put the cwd (the repository root) on sys.path likewise
    sys.path.insert(0, ROOT)
from projects.depth_estimation import (DepthDecoder, DepthMetric, NYUDepthDataset,  # noqa: E402
                                       depth_errors, generate_depth_shapes, read_depth)
from projects.depth_estimation.losses import gradient_matching_loss, silog_loss  # noqa: E402
from vlm2.registry import MODELS  # noqa: E402

CONFIG = os.path.join(ROOT, 'projects', 'depth_estimation', 'configs',
                      'visionllmv2_tiny_shapes_depth.py')
WORDS = ['estimate', 'depth', 'map', 'predict', 'scene', 'pixel']
PIPE = [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=32, max_tiles=1),
        dict(type='LoadDepthInputs', size=32),
        dict(type='PackVLMInputs', fields=('depth_image', 'gt_depth'))]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('depth_shapes'))
    generate_depth_shapes(root, seed=0, num_train=6, num_val=4, size=32)
    return root


def dataset(root, split='train', **kw):
    init_default_scope('vlm2')
    return NYUDepthDataset(data_root=root, ann_file=f'{split}_list.txt', pipeline=PIPE, **kw)


def tiny_model():
    init_default_scope('vlm2')
    torch.manual_seed(0)
    cfg = tiny_model_cfg(decoders=dict(depth=dict(
        type='DepthDecoder', channels=(4, 8, 8, 8), fpn_channels=8, image_size=32)))
    cfg['tokenizer'] = dict(cfg['tokenizer'], extra_words=WORDS)
    return MODELS.build(cfg)


def test_synthetic_layout_is_nyu_style_and_ordered_by_depth(data):
    lines = open(os.path.join(data, 'train_list.txt')).read().split()
    assert lines[:3] == ['rgb/train/000000.png', 'depth/train/000000.png', '32.0']
    raw = np.asarray(Image.open(os.path.join(data, lines[1])))
    assert raw.dtype == np.uint16 and raw.shape == (32, 32)
    depth = read_depth(os.path.join(data, lines[1]), 1000.0)
    assert np.allclose(depth, raw / 1000.0) and 0.5 <= depth.min() < depth.max() <= 10.0
    # the floor recedes towards the horizon: the bottom row is nearer than the top one
    maps = [read_depth(os.path.join(data, f'depth/train/{i:06d}.png'), 1000.0) for i in range(6)]
    assert all(np.median(d[-1]) < np.median(d[0]) for d in maps)


def test_adapter_reads_png_and_npy_and_names_bad_lines(tmp_path, data):
    ds = dataset(data)
    assert len(ds) == 6 and ds[0]['data_samples'].task == 'depth'
    s = ds[0]['data_samples']
    assert s.depth_image.shape == (32, 32, 3) and s.depth_image.dtype == np.uint8
    assert s.gt_depth.shape == (32, 32) and s.conversation[1]['value'] == 'the depth map[DEPTH]'
    np.save(tmp_path / 'd.npy', s.gt_depth)
    (tmp_path / 'list.txt').write_text(
        f'{data}/rgb/train/000000.png {tmp_path}/d.npy\n{data}/rgb/train/000001.png None\n')
    npy = NYUDepthDataset(ann_file=str(tmp_path / 'list.txt'), pipeline=PIPE)
    assert len(npy) == 1  # the line without depth is skipped (and logged)
    assert np.array_equal(npy[0]['data_samples'].gt_depth, s.gt_depth)
    (tmp_path / 'bad.txt').write_text('a.png b.png 1 2\n')
    with pytest.raises(ValueError, match=r'bad.txt line 1'):
        NYUDepthDataset(ann_file=str(tmp_path / 'bad.txt'), pipeline=PIPE)


def test_depth_errors_match_their_definitions():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # 0: no depth
    assert depth_errors(gt, gt) == dict(abs_rel=0.0, rmse=0.0, delta1=1.0)
    e = depth_errors(np.array([[1.2, 3.0], [4.0, 9.0]]), gt)
    assert e['abs_rel'] == pytest.approx((0.2 + 0.5 + 0.0) / 3)
    assert e['rmse'] == pytest.approx(np.sqrt((0.04 + 1.0) / 3))
    assert e['delta1'] == pytest.approx(2 / 3)  # 1.5 fails the 1.25 threshold


def test_metric_counts_unrouted_samples():
    metric = DepthMetric()
    gt = np.full((2, 2), 2.0)
    metric.process(None, [dict(task='depth', gt_depth=gt, pred_depth=gt * 1.1),
                          dict(task='depth', gt_depth=gt),
                          dict(task='vqa', pred_text='x')])
    out = metric.compute_metrics(metric.results)
    assert out['routed'] == 0.5 and out['abs_rel'] == pytest.approx(0.1)


def test_losses_are_scale_aware_and_edge_sensitive():
    valid = torch.ones(8, 8, dtype=torch.bool)
    offset = torch.full((8, 8), 0.3)  # a global scale error in log space
    assert silog_loss(offset, valid, lam=1.0) < 1e-3  # λ=1: fully scale-invariant
    assert silog_loss(offset, valid, lam=0.85) > 0.1  # λ<1 keeps part of the scale
    assert gradient_matching_loss(offset, valid) == 0
    edge = offset.clone()
    edge[:, 4:] = -0.3
    assert gradient_matching_loss(edge, valid) > 0


def test_decoder_trains_through_the_super_link_and_predicts_at_input_resolution(data):
    model = tiny_model()
    data_batch = pseudo_collate([dataset(data)[i] for i in range(3)])
    losses = model(**model.data_preprocessor(data_batch, True), mode='loss')
    assert {'depth.loss_silog', 'depth.loss_grad', 'loss_lm'} <= set(losses)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    dec = model.super_link.decoders['depth']
    assert model.super_link.queries['depth'].weight.grad.abs().sum() > 0  # not detached
    assert dec.film[-1].weight.grad.abs().sum() > 0
    # forced routing: the given answer's [DEPTH] fires; the map has the image's size
    model.eval()
    model.test_cfg['routing'] = 'forced'
    val = dataset(data, 'val', test_mode=True)
    out = model.test_step(pseudo_collate([val[0], val[1]]))
    assert out[0].pred_depth.shape == (32, 32) and out[0].pred_depth.dtype == np.float32
    assert 0.5 <= out[0].pred_depth.min() and out[0].pred_depth.max() <= 10.0
    picture = dec.draw(np.zeros((32, 32, 3), np.uint8), out[0])
    assert picture.shape == (32, 64, 3)
    fmt = dec.format_results(out[0])
    assert fmt['shape'] == [32, 32] and len(fmt['depth']) == 32
    json.dumps(fmt)


def test_film_embedding_modulates_the_depth_map():
    dec = DepthDecoder(16, channels=(4, 8, 8, 8), fpn_channels=8).eval()
    torch.nn.init.normal_(dec.film[-1].weight)
    img = torch.randn(1, 3, 32, 32)
    a = dec.forward_log_depth(img, torch.zeros(1, 16))
    b = dec.forward_log_depth(img, torch.ones(1, 16))
    assert a.shape == (1, 1, 32, 32) and not torch.allclose(a, b)


def test_recipe_trains_and_tests_with_the_unchanged_tools(data, tmp_path):
    """2 iterations of the recipe (shrunk) with tools/train.py, then tools/test.py
    --show-dir writes a colour-mapped depth picture per sample."""
    shrink = ['model.vision_tower.config.hidden_size=32',
              'model.vision_tower.config.intermediate_size=64',
              'model.vision_tower.config.num_hidden_layers=1',
              'model.llm.config.hidden_size=64', 'model.llm.config.intermediate_size=128',
              'model.llm.config.num_hidden_layers=2',
              'model.llm.config.layer_types=[sliding_attention,full_attention]',
              'model.llm.config.num_key_value_heads=4',
              'model.test_cfg.routing=forced',
              'model.super_link.decoders.depth.channels=[4,8,8,8]',
              'model.super_link.decoders.depth.fpn_channels=8',
              f'train_dataloader.dataset.datasets.0.data_root={data}/',
              f'val_dataloader.dataset.datasets.0.data_root={data}/',
              f'test_dataloader.dataset.datasets.0.data_root={data}/',
              'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
              'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
              'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
              'test_dataloader.persistent_workers=False']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    work = str(tmp_path / 'w')

    def run(*args):
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc
    run('tools/train.py', CONFIG, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2', *shrink)
    proc = run('tools/test.py', CONFIG, os.path.join(work, 'iter_2.pth'), '--work-dir', work,
               '--show-dir', 'show', '--cfg-options', *shrink)
    assert 'depth/delta1' in proc.stdout + proc.stderr
    pictures = sorted(os.listdir(os.path.join(work, 'show')))
    assert len(pictures) == 4
    assert Image.open(os.path.join(work, 'show', pictures[0])).width == 384


def test_decoder_reads_its_image_from_img_path_when_none_was_packed(data):
    """tools/infer.py packs no plugin fields: the decoder falls back to img_path."""
    from vlm2.structures import LinkedPhrases, VLMDataSample
    dec = DepthDecoder(16, channels=(4, 8, 8, 8), fpn_channels=8, image_size=32).eval()
    path = os.path.join(data, 'rgb', 'val', '000000.png')
    packed = dataset(data, 'val', test_mode=True)[0]['data_samples']
    phrase = LinkedPhrases(tokens=['[DEPTH]'], states=[torch.randn(4, 16)])
    bare = VLMDataSample(metainfo=dict(img_path=path, ori_shape=(32, 32), sample_id='x'))
    dec.predict([phrase, phrase], [bare, packed])
    assert bare.pred_depth.shape == (32, 32)
    assert np.allclose(bare.pred_depth, packed.pred_depth, rtol=1e-4)
    with pytest.raises(ValueError, match='sample y: no depth_image and no img_path'):
        dec.predict([phrase], [VLMDataSample(metainfo=dict(sample_id='y'))])


def test_time_limit_hook_makes_the_current_iteration_the_last():
    from types import SimpleNamespace
    from projects.depth_estimation import TrainTimeLimitHook
    runner = SimpleNamespace(iter=9, train_loop=SimpleNamespace(_max_iters=100, max_iters=100))
    hook = TrainTimeLimitHook(max_seconds=0.0)
    hook.before_train(runner)
    hook.after_train_iter(runner, 9)
    assert runner.train_loop._max_iters == 10  # the 10th iteration (index 9) is the last
    patient = TrainTimeLimitHook(max_seconds=3600.0)
    runner.train_loop._max_iters = 100
    patient.before_train(runner)
    patient.after_train_iter(runner, 9)
    assert runner.train_loop._max_iters == 100
