"""The perception plugin: shared query table, gradients, phrase slots, batching, adapters."""
import copy
import json
import os.path as osp
import random
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image

from conftest import recipe_rates, tiny_model_cfg

init_default_scope('vlm2')
from vlm2.plugins import grounding_dino  # noqa: E402
from vlm2.plugins.grounding_dino import (CocoInstancesDataset, InteractiveSegDataset,  # noqa
                                         InteractiveSegMetric, PhraseSlots, RefCocoDataset,
                                         RECMetric, RESMetric)
from vlm2.registry import MODELS  # noqa: E402

PAPER = Config.fromfile(osp.join(osp.dirname(grounding_dino.__file__), 'configs', '_base_',
                                 'paper_losses.py'))

SIZE = 32
# non-contiguous category ids, names in the test tokenizer's words
CATEGORIES = [dict(id=2, name='circle'), dict(id=5, name='square'), dict(id=9, name='cat')]
D = 256  # Grounding DINO's text width (its text positions are hard-wired to 256)
DETECTOR = dict(
    num_queries=6, with_box_refine=True, as_two_stage=True, num_feature_levels=2,
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=16),
    backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=3, strides=(1, 2, 2),
                  dilations=(1, 1, 1), out_indices=(0, 1, 2), norm_eval=False),
    neck=dict(type='ChannelMapper', in_channels=[16, 32], kernel_size=1, out_channels=D,
              act_cfg=None, norm_cfg=dict(type='GN', num_groups=32), num_outs=2),
    encoder=dict(num_layers=1,
                 layer_cfg=dict(self_attn_cfg=dict(embed_dims=D, num_levels=2, num_points=2),
                                ffn_cfg=dict(embed_dims=D, feedforward_channels=32)),
                 text_layer_cfg=dict(self_attn_cfg=dict(num_heads=4, embed_dims=D),
                                     ffn_cfg=dict(embed_dims=D, feedforward_channels=32)),
                 fusion_layer_cfg=dict(v_dim=D, l_dim=D, embed_dim=32, num_heads=4)),
    decoder=dict(num_layers=1, return_intermediate=True, post_norm_cfg=None,
                 layer_cfg=dict(self_attn_cfg=dict(embed_dims=D, num_heads=4),
                                cross_attn_text_cfg=dict(embed_dims=D, num_heads=4),
                                cross_attn_cfg=dict(embed_dims=D, num_levels=2, num_points=2),
                                ffn_cfg=dict(embed_dims=D, feedforward_channels=32))),
    positional_encoding=dict(num_feats=D // 2, normalize=True, offset=0.0, temperature=20),
    bbox_head=dict(type='VLM2PhraseGroundingHead', num_classes=256, pixel_in_channels=8,
                   num_points=64, contrastive_cfg=dict(max_text_len=256, log_scale='auto',
                                                       bias=True),
                   **PAPER.losses),
    dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=6)),
    train_cfg=PAPER.matching,
    test_cfg=dict(max_per_img=10))
DECODER = dict(type='GroundingDINODecoder', detector=DETECTOR,
               max_per_img=dict(default=10, rec=1, res=1))


def write_fixture(root, annotations=None, images=None):
    """A COCO instances file (polygons, RLE, iscrowd, an empty image, a box partly outside and
    a degenerate one), refer-style refs, and the PNGs they name."""
    (root / 'images').mkdir(exist_ok=True)
    images = images or [dict(id=11, file_name='a.png', width=SIZE, height=SIZE),
                        dict(id=12, file_name='b.png', width=SIZE, height=SIZE),
                        dict(id=13, file_name='empty.png', width=SIZE, height=SIZE)]
    rng = np.random.default_rng(0)
    for img in images:
        Image.fromarray(rng.integers(0, 255, (img['height'], img['width'], 3),
                                     dtype=np.uint8)).save(root / 'images' / img['file_name'])
    square = [[4, 4, 14, 4, 14, 14, 4, 14]]
    rle = dict(size=[SIZE, SIZE], counts=[SIZE * 18 + 20] + [10, SIZE - 10] * 9 + [10]
               + [SIZE * SIZE - (SIZE * 18 + 20) - 10 * 10 - (SIZE - 10) * 9])
    annotations = annotations if annotations is not None else [
        dict(id=1, image_id=11, category_id=5, bbox=[4, 4, 10, 10], segmentation=square,
             area=100, iscrowd=0),
        dict(id=2, image_id=11, category_id=9, bbox=[18, 20, 10, 10], segmentation=rle,
             area=100, iscrowd=0),
        dict(id=3, image_id=12, category_id=2, bbox=[20, 20, 20, 8],  # partly outside
             segmentation=[[20, 20, 31, 20, 31, 27, 20, 27]], area=88, iscrowd=0),
        dict(id=4, image_id=12, category_id=2, bbox=[40, 40, 5, 5],  # outside: degenerate
             segmentation=[[40, 40, 45, 40, 45, 45]], area=10, iscrowd=0),
        dict(id=5, image_id=12, category_id=5, bbox=[2, 2, 8, 8], iscrowd=1, area=64,
             segmentation=[[2, 2, 10, 2, 10, 10, 2, 10]])]
    coco = dict(images=images, annotations=annotations, categories=CATEGORIES)
    (root / 'instances.json').write_text(json.dumps(coco))
    refs = [dict(ref_id=0, ann_id=1, image_id=11, split='val', category_id=5, sentences=[
        dict(sent='the blue square', sent_id=0), dict(sent='the square', sent_id=1)])]
    (root / 'refs.json').write_text(json.dumps(refs))
    return root


def det_pipeline(train, token='[DET]'):
    return [dict(type='LoadImageIfAny'),
            dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PhraseSlots', routing_token=token, shuffle=train, num_negatives=1),
            dict(type='DynamicTiles', tile_size=SIZE, max_tiles=1),
            dict(type='mmdet.Resize', scale=(SIZE, SIZE), keep_ratio=True),
            dict(type='PackDecoderInputs'),
            dict(type='PackVLMInputs', fields=('det_inputs', 'det_sample', 'phrase_names'))]


def ref_pipeline(token='[GRD]'):
    return [dict(type='LoadImageIfAny'),
            dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='ReferringPrompt', routing_token=token, shuffle=False),
            dict(type='DynamicTiles', tile_size=SIZE, max_tiles=1),
            dict(type='mmdet.Resize', scale=(SIZE, SIZE), keep_ratio=True),
            dict(type='PackDecoderInputs'),
            dict(type='PackVLMInputs', fields=('det_inputs', 'det_sample', 'phrase_names',
                                               'gt_bbox', 'gt_segm'))]


def coco(root, train=True, **kw):
    return CocoInstancesDataset(ann_file=str(root / 'instances.json'),
                                data_prefix=dict(img_path=str(root / 'images')),
                                pipeline=det_pipeline(train), **kw)


@pytest.fixture
def fixture(tmp_path):
    return write_fixture(tmp_path)


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(decoders=dict(perception=copy.deepcopy(DECODER))))
    model.init_weights()  # as the runner does
    return model


def test_det_seg_grd_share_one_table(model):
    link = model.super_link
    assert list(link.queries) == ['perception']
    assert link.queries['perception'].num_embeddings == 4
    assert {link.token_owner[t] for t in ('[DET]', '[SEG]', '[GRD]')} == {'perception'}
    ids = model.tokenizer.convert_tokens_to_ids
    emb = ids('[EMB]')
    row = [ids('circle')]
    for token in ('[DET]', '[SEG]', '[GRD]'):
        row += [ids(token)] + [emb] * 4
    input_ids = torch.tensor([row])
    embeds = link.embed_queries(input_ids, torch.zeros(1, len(row), 64))
    table = link.queries['perception'].weight
    for start in (2, 7, 12):  # the three runs of [EMB]
        assert torch.equal(embeds[0, start:start + 4], table)


def test_detection_loss_reaches_query_table_and_llm(model, fixture):
    samples = [coco(fixture)[i] for i in range(2)] + \
        [RefCocoDataset(ann_file=str(fixture / 'refs.json'), instances_file=str(
            fixture / 'instances.json'), data_prefix=dict(img_path=str(fixture / 'images')),
            pipeline=ref_pipeline())[0]]
    data = model.data_preprocessor(pseudo_collate(samples), True)
    losses = model.loss(**data)
    decoder_loss = sum(v for k, v in losses.items() if k.startswith('perception.'))
    for key in ('loss_cls', 'loss_bbox', 'loss_iou', 'dn_loss_cls', 'loss_mask', 'loss_dice'):
        assert torch.isfinite(losses[f'perception.{key}'])
    model.zero_grad()
    decoder_loss.backward()
    assert model.super_link.queries['perception'].weight.grad.abs().sum() > 0
    llm_grads = [p.grad for n, p in model.llm.named_parameters() if 'layers.0.' in n]
    assert any(g is not None and g.abs().sum() > 0 for g in llm_grads)
    assert model.super_link.decoders['perception'].phrase_mlp.layers[0].weight.grad is not None


@pytest.mark.parametrize('noise', [0.0, 2.0])
def test_denoising_queries_take_their_content_from_the_phrases(noise):
    """A denoising query is the projection of its target's phrase (or, with label noise,
    another phrase of the same prompt), never of a padding slot or another image's phrase."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from vlm2.plugins.grounding_dino.detector import PhraseCdnQueryGenerator
    torch.manual_seed(0)
    gen = PhraseCdnQueryGenerator(num_classes=256, embed_dims=8, num_matching_queries=4,
                                  label_noise_scale=max(noise, 1e-6), box_noise_scale=1.0,
                                  group_cfg=dict(dynamic=False, num_groups=3))
    text = torch.randn(2, 3, 8)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    samples = []
    for labels in ([2, 0], [1]):
        s = DetDataSample(metainfo=dict(img_shape=(32, 32)))
        s.gt_instances = InstanceData(labels=torch.tensor(labels),
                                      bboxes=torch.tensor([[2., 2., 20., 20.]] * len(labels)))
        samples.append(s)
    gen.text = (text, valid)
    query, _, _, meta = gen(samples)
    assert meta['num_denoising_queries'] == 2 * 2 * 3  # max targets x (pos, neg) x groups
    with torch.no_grad():
        table = gen.label_embedding(text)  # (2, 3, 8): every phrase's projection
    for b, labels in enumerate(([2, 0], [1])):
        rows = query[b].view(2 * 3, 2, 8)  # (pos/neg x group, max targets, D)
        for r in rows:
            for t in range(2):
                if t >= len(labels):
                    assert not r[t].any()  # padding
                    continue
                dist = (table[b] - r[t]).abs().amax(-1)
                slot = int(dist.argmin())
                assert dist[slot] < 1e-5 and bool(valid[b, slot])
                if noise == 0:
                    assert slot == labels[t]
    with pytest.raises(RuntimeError, match='text'):
        gen.text = None
        gen(samples)


def test_phrase_slots_shuffle_and_negatives():
    classes = ['circle', 'square', 'cat', 'dog', 'red', 'blue']
    labels = np.array([2, 4, 2, 0])
    orders = set()
    for seed in range(20):
        random.seed(seed)
        t = PhraseSlots(routing_token='[SEG]', num_negatives=2, shuffle=True)
        out = t(dict(classes=classes, gt_bboxes_labels=labels.copy(), sample_id='x'))
        names = out['phrase_names']
        assert len(names) == 5 and len(set(names)) == 5  # 3 positives + 2 negatives
        assert {'cat', 'red', 'circle'} <= set(names)
        # every target's slot names its class
        assert [names[s] for s in out['gt_bboxes_labels']] == [classes[c] for c in labels]
        assert [classes[c] for c in out['phrase_classes']] == names
        assert out['conversation'][1]['value'] == ', '.join(f'{n}[SEG]' for n in names)
        assert ', '.join(names) in out['conversation'][0]['value']
        orders.add(tuple(names))
    assert len(orders) > 5  # shuffled
    test = PhraseSlots(shuffle=False)(dict(classes=classes, gt_bboxes_labels=labels.copy()))
    assert test['phrase_names'] == classes and list(test['gt_bboxes_labels']) == [2, 4, 2, 0]


def test_phrase_slots_over_capacity_drop_and_count():
    random.seed(0)
    t = PhraseSlots(max_phrases=2, num_negatives=0)
    out = t(dict(classes=['a', 'b', 'c'], gt_bboxes_labels=np.array([0, 1, 2, 2]),
                 gt_bboxes=np.zeros((4, 4)), gt_ignore_flags=np.zeros(4, bool)))
    assert len(out['phrase_names']) == 2 and len(out['gt_bboxes']) == 4 - t.dropped
    assert t.dropped in (1, 2)
    assert [out['phrase_names'][s] for s in out['gt_bboxes_labels']] == \
        [n for n in 'abcc' if n in out['phrase_names']]


def test_pipeline_remaps_labels_to_slots(fixture):
    random.seed(3)
    ds = coco(fixture)
    for _ in range(5):
        sample = ds[0]['data_samples']
        names = sample.phrase_names
        gt = sample.det_sample.gt_instances
        # image 11 holds a square (id 5) and a cat (id 9)
        assert sorted(names[i] for i in gt.labels.tolist()) == ['cat', 'square']
        assert len(names) == 3  # 2 positives + 1 negative
        assert gt.masks.masks.shape == (2, SIZE, SIZE)


def test_batched_prediction_matches_per_sample(model, fixture):
    model.eval()
    model.test_cfg['routing'] = 'forced'
    samples = [coco(fixture, train=False, test_mode=True)[0],
               RefCocoDataset(ann_file=str(fixture / 'refs.json'),
                              instances_file=str(fixture / 'instances.json'),
                              data_prefix=dict(img_path=str(fixture / 'images')),
                              pipeline=ref_pipeline(), task='rec')[1],
               coco(fixture, train=False, test_mode=True)[1]]

    def predict(batch):
        with torch.no_grad():
            return model.predict(**model.data_preprocessor(pseudo_collate(copy.deepcopy(batch)),
                                                           False))
    batched = predict(samples)
    assert [len(s.pred_instances) for s in batched] == [10, 1, 10]
    assert batched[1].pred_instances.label_names == ['the square']
    for sample, out in zip(samples, batched):
        single = predict([sample])[0].pred_instances
        ours = out.pred_instances
        assert torch.allclose(single.scores, ours.scores, atol=1e-5)
        # the same (phrase, box, mask) at each score; near-ties may swap places
        for i in range(len(single)):
            j = int(((ours.scores - single.scores[i]).abs() + 10 * (
                ours.labels != single.labels[i]) + (ours.bboxes - single.bboxes[i]).abs().sum(
                    1)).argmin())
            assert ours.labels[j] == single.labels[i]
            assert torch.allclose(ours.bboxes[j], single.bboxes[i], atol=1e-3)
            assert (ours.masks[j] != single.masks[i]).float().mean() < 1e-2
    formatted = model.super_link.decoders['perception'].format_results(batched[0])
    assert len(formatted['masks']) == 10 and formatted['phrases'][0] in ('circle', 'square', 'cat')
    json.dumps(formatted)
    decoder = model.super_link.decoders['perception']
    decoder.draw_score_thr = 0.0
    picture = decoder.draw(np.full((SIZE, SIZE, 3), 255, np.uint8), batched[0])
    assert picture.shape == (SIZE, SIZE, 3) and (picture != 255).any()


def test_adapter_clips_drops_and_keeps_empty_images(fixture):
    ds = coco(fixture)
    ds.full_init()
    assert ds.num_degenerate == 1
    assert ds.metainfo['classes'] == ('circle', 'square', 'cat')
    infos = {d['img_id']: d for d in (ds.get_data_info(i) for i in range(len(ds)))}
    assert infos[13]['instances'] == []  # image without annotations kept
    partly, crowd = infos[12]['instances']
    assert partly['bbox'] == [20, 20, SIZE, 28] and partly['bbox_label'] == 0
    assert crowd['ignore_flag'] == 1 and crowd['bbox_label'] == 1
    assert infos[11]['instances'][1]['bbox_label'] == 2  # category id 9 → label 2


@pytest.mark.parametrize('segmentation', [[[1, 2, 3]], 'not a mask', dict(counts='x')])
def test_corrupt_segmentation_names_the_annotation(tmp_path, segmentation):
    write_fixture(tmp_path, annotations=[
        dict(id=1, image_id=11, category_id=5, bbox=[4, 4, 10, 10], iscrowd=0,
             segmentation=[[4, 4, 14, 4, 14, 14]]),
        dict(id=77, image_id=11, category_id=5, bbox=[4, 4, 10, 10], iscrowd=0,
             segmentation=segmentation)])
    with pytest.raises(ValueError, match=r'instances\.json: annotation id=77 .*corrupt'):
        coco(tmp_path).full_init()


def test_unknown_image_id_names_the_annotation(tmp_path):
    write_fixture(tmp_path, annotations=[
        dict(id=31, image_id=404, category_id=5, bbox=[4, 4, 10, 10], iscrowd=0,
             segmentation=[[4, 4, 14, 4, 14, 14]])])
    with pytest.raises(ValueError, match=r'annotation id=31 refers to unknown image id 404'):
        coco(tmp_path).full_init()


def test_referring_training_prompts_hold_every_referred_object_of_the_image(fixture):
    refs = json.loads((fixture / 'refs.json').read_text()) + [
        dict(ref_id=1, ann_id=2, image_id=11, split='val', category_id=9,
             sentences=[dict(sent='the star', sent_id=2)]),
        dict(ref_id=2, ann_id=1, image_id=11, split='val', category_id=5,  # same object
             sentences=[dict(sent='the left shape', sent_id=3)]),
        dict(ref_id=3, ann_id=3, image_id=12, split='val', category_id=2,
             sentences=[dict(sent='the wide box', sent_id=4)])]
    (fixture / 'refs.json').write_text(json.dumps(refs))

    def dataset(train):
        pipeline = ref_pipeline()
        pipeline[2] = dict(pipeline[2], shuffle=train)
        return RefCocoDataset(ann_file=str(fixture / 'refs.json'), per_image=True,
                              instances_file=str(fixture / 'instances.json'),
                              data_prefix=dict(img_path=str(fixture / 'images')),
                              pipeline=pipeline)
    ds = dataset(train=False)
    ds.full_init()
    assert len(ds) == 2
    assert ds.get_data_info(0)['phrase'] == [['the blue square', 'the square', 'the left shape'],
                                             ['the star']]
    sample = ds[0]['data_samples']
    assert sample.conversation[1]['value'] == 'the blue square[GRD], the star[GRD]'
    assert sample.conversation[0]['value'].endswith('the blue square, the star?')
    assert sample.det_sample.gt_instances.labels.tolist() == [0, 1]

    # training draws a sentence per object and the slots' order; labels follow the slots
    ds = dataset(train=True)
    random.seed(0)
    orders = set()
    for _ in range(12):
        sample = ds[0]['data_samples']
        names = sample.phrase_names
        assert sample.conversation[1]['value'] == ', '.join(f'{n}[GRD]' for n in names)
        star = names.index('the star')
        boxes = sample.det_sample.gt_instances.bboxes.tensor
        labels = sample.det_sample.gt_instances.labels.tolist()
        assert boxes[labels.index(star)][0] > 15  # the star is annotation 2, at x = 18
        assert names[1 - star] in ('the blue square', 'the square', 'the left shape')
        orders.add(star)
    assert orders == {0, 1}


def test_rec_and_res_metrics():
    box = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[0, :10, :10] = True
    hit = dict(task='rec', gt_bbox=[1, 1, 10, 10],
               pred_instances=dict(bboxes=box, scores=torch.tensor([0.9, 0.1])))
    miss = dict(task='rec', gt_bbox=[1, 1, 10, 10],
                pred_instances=dict(bboxes=box, scores=torch.tensor([0.1, 0.9])))
    rec = RECMetric()
    rec.process({}, [hit, miss, dict(task='det')])
    assert rec.compute_metrics(rec.results)['precision@0.5'] == 0.5
    res = RESMetric()
    gt = [[0, 0, 5, 0, 5, 10, 0, 10]]  # the left half of the predicted square
    res.process({}, [dict(task='res', gt_segm=gt, det_sample=dict(ori_shape=(32, 32)),
                          pred_instances=dict(masks=mask, scores=torch.tensor([0.9, 0.1])))])
    out = res.compute_metrics(res.results)
    assert 0.4 < out['cIoU'] < 0.65 and out['cIoU'] == pytest.approx(out['gIoU'])


def interactive(root, kind=None, shuffle=None, **kwargs):
    fields = ('det_inputs', 'det_sample', 'phrase_names', 'gt_bbox', 'gt_segm', 'region_masks',
              'prompt_kinds')
    return InteractiveSegDataset(
        ann_file=str(root / 'instances.json'), data_prefix=dict(img_path=str(root / 'images')),
        test_mode=kind is not None, **kwargs,
        pipeline=[dict(type='LoadImageIfAny'),
                  dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='ReferringPrompt', routing_token='[SEG]', templates='interactive',
                       shuffle=kind is None if shuffle is None else shuffle),
                  dict(type='DynamicTiles', tile_size=SIZE, max_tiles=1),
                  dict(type='VisualPromptMasks', tile_size=SIZE, kind=kind),
                  dict(type='mmdet.Resize', scale=(SIZE, SIZE), keep_ratio=True),
                  dict(type='PackDecoderInputs'), dict(type='PackVLMInputs', fields=fields)])


def test_interactive_segmentation_samples_prompt_a_region_and_answer_its_seg_phrase(fixture):
    ds = interactive(fixture, kind='box')
    ds.full_init()
    # one sample per instance: the crowd region (5) is skipped, the degenerate box (4) dropped
    assert [ds.get_data_info(i)['regions'][0]['id'] for i in range(len(ds))] == [1, 2, 3]
    assert ds.num_degenerate == 1
    sample = ds[0]['data_samples']
    assert sample.conversation == [
        {'from': 'human', 'value': '<image>\nPlease segment <reg>region1<region></reg>.'},
        {'from': 'gpt', 'value': 'region1[SEG]'}]
    assert sample.phrase_names == ['region1'] and sample.prompt_kinds == ['box']
    assert sample.det_sample.gt_instances.labels.tolist() == [0]
    prompt = sample.region_masks[0].bool()
    assert prompt[4:14, 4:14].all() and prompt.sum() == 100  # the box of annotation 1


def test_interactive_training_prompts_hold_every_region_of_the_image_as_its_own_slot(fixture):
    ds = interactive(fixture, kind='box', per_image=True)
    ds.full_init()
    assert len(ds) == 2  # images 11 (two instances) and 12 (one; crowd and degenerate out)
    sample = ds[0]['data_samples']
    assert sample.conversation == [
        {'from': 'human', 'value': '<image>\nPlease segment <reg>region1<region></reg>, '
                                   '<reg>region2<region></reg>.'},
        {'from': 'gpt', 'value': 'region1[SEG], region2[SEG]'}]
    assert sample.phrase_names == ['region1', 'region2']
    assert sample.det_sample.gt_instances.labels.tolist() == [0, 1]
    masks = sample.region_masks.bool()
    assert masks.shape[0] == 2 and masks[0, 4:14, 4:14].all() and masks[0].sum() == 100
    assert masks[1, 20:30, 18:28].all() and not masks[1, :14, :14].any()  # annotation 2
    assert 'gt_bbox' not in sample  # no single target: the metric scores one region at a time

    capped = interactive(fixture, per_image=True, max_regions=1)
    capped.full_init()
    assert capped.num_regions_left_out == 1
    assert [len(capped.get_data_info(i)['regions']) for i in range(len(capped))] == [1, 1]


def test_interactive_training_draws_which_region_gets_which_number(fixture):
    """With a fixed numbering `region1` would always be the first annotated object, and the
    name alone would say which object to segment."""
    ds = interactive(fixture, kind='box', shuffle=True, per_image=True)
    ds.full_init()
    random.seed(0)
    first = set()
    for _ in range(12):
        sample = ds[0]['data_samples']
        assert sample.phrase_names == ['region1', 'region2']
        labels = sample.det_sample.gt_instances.labels.tolist()
        boxes = sample.det_sample.gt_instances.bboxes.tensor
        masks = sample.region_masks.bool()
        for label, box in zip(labels, boxes):  # slot j's prompt lies on slot j's object
            x0, y0, x1, y1 = box.round().int().tolist()
            assert masks[label, y0:y1, x0:x1].float().mean() > 0.9
            assert masks[label].sum() == (x1 - x0) * (y1 - y0)
        first.add(labels.index(0))
    assert first == {0, 1}  # either object is region1


def test_interactive_segmentation_loss_reaches_the_region_encoder(fixture):
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(decoders=dict(perception=copy.deepcopy(DECODER)),
                                        region_encoder=dict(num_levels=2)))
    model.init_weights()
    ds = interactive(fixture)
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[2]]), True)
    losses = model.loss(**data)
    (losses['perception.loss_mask'] + losses['perception.loss_dice']).backward()
    grads = [p.grad for p in model.region_encoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_region_phrase_loss_pairs_each_answer_phrase_with_its_own_region(fixture):
    """`regionK[SEG]` in the answer is paired with the `<region>` after `<reg>regionK`, in the
    batch's reading order, whatever the drawn numbering; the term trains the LLM."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(decoders=dict(perception=copy.deepcopy(DECODER)),
                                        region_encoder=dict(num_levels=2),
                                        region_phrase_loss=dict(weight=1.0)))
    model.init_weights()
    ds = interactive(fixture, kind='box', shuffle=True, per_image=True)
    ds.full_init()
    random.seed(1)
    samples = [ds[0], ds[0]]
    data = model.data_preprocessor(pseudo_collate(samples), True)
    batch, embeds = model.embed(data['inputs'], data['data_samples'], for_generation=False)
    hidden = model._hidden(embeds, batch['attention_mask'])
    found, names = model._answer_phrases(batch, hidden)
    states, targets = model.region_phrase_loss.pairs(
        found, names, model._named_regions(batch['input_ids']))
    expected = []
    for b, sample in enumerate(data['data_samples']):
        prompt = sample.conversation[0]['value']
        order = re.findall(r'<reg>(region\d+)<region></reg>', prompt)
        expected += [2 * b + order.index(name) for name in sample.phrase_names]
    assert targets == expected and len(states) == 4
    assert torch.equal(states[0], found[0][0][1].mean(0))
    loss = model.loss(**data)['loss_region_phrase']
    assert loss > 0
    loss.backward()
    assert model.llm.get_input_embeddings().weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.region_phrase_loss.parameters())


def test_region_phrase_loss_needs_a_region_encoder():
    with pytest.raises(ValueError, match='region_phrase_loss needs a model.region_encoder'):
        MODELS.build(tiny_model_cfg(region_phrase_loss=dict()))


def test_interactive_segmentation_metric_per_prompt_kind():
    metric = InteractiveSegMetric()
    full = torch.zeros(1, 32, 32, dtype=torch.bool)
    full[0, :10, :10] = True
    square = [[0, 0, 10, 0, 10, 10, 0, 10]]
    half = [[0, 0, 5, 0, 5, 10, 0, 10]]

    def sample(kind, gt):
        return dict(task='interactive', prompt_kinds=[kind], gt_segm=gt,
                    det_sample=dict(ori_shape=(32, 32)),
                    pred_instances=dict(masks=full, scores=torch.tensor([0.9])))
    metric.process({}, [sample('box', square), sample('point', half), sample('point', square),
                        dict(task='res')])
    out = metric.compute_metrics(metric.results)
    assert out['box/mIoU'] == out['box/cIoU'] == 1.0
    assert out['point/mIoU'] == pytest.approx(0.75)  # IoUs 0.5 and 1
    assert out['point/cIoU'] == pytest.approx(150 / 200)
    assert out['mIoU'] == pytest.approx(2.5 / 3) and out['cIoU'] == pytest.approx(250 / 300)


def test_coco_metric_maps_phrases_to_category_ids(fixture):
    from vlm2.plugins.grounding_dino import PhraseCocoMetric
    from vlm2.plugins.grounding_dino.metrics import decode_segm
    data = json.loads((fixture / 'instances.json').read_text())
    data['annotations'] = [a for a in data['annotations'] if a['id'] in (1, 2, 5)]
    data['annotations'].append(dict(id=6, image_id=12, category_id=2, bbox=[16, 16, 10, 8],
                                    segmentation=[[16, 16, 26, 16, 26, 24, 16, 24]], iscrowd=0,
                                    area=80))
    (fixture / 'instances.json').write_text(json.dumps(data))
    metric = PhraseCocoMetric(ann_file=str(fixture / 'instances.json'), tasks='det')
    for img_id in (11, 12, 13):
        anns = [a for a in data['annotations'] if a['image_id'] == img_id and not a['iscrowd']]
        names = {c['id']: c['name'] for c in CATEGORIES}
        boxes = torch.tensor([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                               a['bbox'][1] + a['bbox'][3]] for a in anns]).reshape(-1, 4)
        masks = torch.from_numpy(np.stack([decode_segm(a['segmentation'], SIZE, SIZE)
                                           for a in anns] or [np.zeros((SIZE, SIZE))])).bool()
        pred = dict(bboxes=boxes.float(), scores=torch.ones(len(anns)),
                    labels=torch.zeros(len(anns), dtype=torch.long), masks=masks[:len(anns)],
                    label_names=[names[a['category_id']] for a in anns])
        metric.process({}, [dict(task='det', det_sample=dict(img_id=img_id,
                                                             ori_shape=(SIZE, SIZE)),
                                 pred_instances=pred)])
    out = metric.compute_metrics(metric.results)
    assert out['bbox_mAP'] == 1.0 and out['segm_mAP'] == 1.0


def test_crowdhuman_adapter_and_metric(tmp_path):
    from vlm2.plugins.grounding_dino import CrowdHumanDataset, PhraseCrowdHumanMetric
    def box(tag, fbox, **extra):  # full, visible and head boxes, as the real files have
        return dict(tag=tag, fbox=fbox, vbox=fbox, hbox=fbox[:2] + [5, 5], extra=extra,
                    head_attr={})
    records = [dict(ID='img1', gtboxes=[
        box('person', [10, 10, 20, 40], ignore=0), box('person', [50, 10, 20, 40], ignore=1),
        box('mask', [80, 10, 10, 10], ignore=1)]),
        dict(ID='img2', gtboxes=[box('person', [5 + 40 * k, 5, 30, 60]) for k in range(9)])]
    odgt = tmp_path / 'annotation_val.odgt'
    odgt.write_text('\n'.join(json.dumps(r) for r in records))
    ds = CrowdHumanDataset(ann_file=str(odgt), data_prefix=dict(img_path='Images'),
                           pipeline=[], lazy_init=False)
    info = ds.get_data_info(0)
    assert info['img_path'] == 'Images/img1.jpg' and info['classes'] == ('person',)
    assert [i['ignore_flag'] for i in info['instances']] == [0, 1, 1]
    assert ds.num_degenerate == 0
    assert info['instances'][0]['bbox'] == [10, 10, 30, 50]
    metric = PhraseCrowdHumanMetric(ann_file=str(odgt))
    preds = dict(img1=[[10., 10., 30., 50.]],
                 img2=[[5. + 40 * k, 5., 35. + 40 * k, 65.] for k in range(9)])
    for rec, boxes in preds.items():
        metric.process({}, [dict(task='crowd', det_sample=dict(img_id=rec, ori_shape=(100, 400)),
                                 pred_instances=dict(bboxes=torch.tensor(boxes),
                                                     scores=torch.linspace(0.9, 0.5, len(boxes))))])
    out = metric.compute_metrics(metric.results)
    # all 10 persons found, no false positive; mmdet integrates AP from the first detection's
    # recall (0.1), so a perfect list scores 0.9
    assert out['recall'] == 1.0 and out['mAP'] == pytest.approx(0.9) and out['mMR'] < 0.1
    records[0]['gtboxes'].append(box('person', [0, 0, 0, 5]))
    odgt.write_text('\n'.join(json.dumps(r) for r in records))
    ds = CrowdHumanDataset(ann_file=str(odgt), pipeline=[], lazy_init=False)
    assert ds.num_degenerate == 1 and len(ds.get_data_info(0)['instances']) == 3
    bad = tmp_path / 'bad.odgt'
    bad.write_text(json.dumps(dict(ID='x', gtboxes=[dict(tag='person')])))
    with pytest.raises(ValueError, match='bad.odgt line 1'):
        CrowdHumanDataset(ann_file=str(bad), pipeline=[], lazy_init=False)


def test_flip_swaps_left_and_right():
    from vlm2.plugins.grounding_dino import FlipPhrases
    out = FlipPhrases()(dict(flip=True, flip_direction='horizontal', phrase='the left circle',
                             conversation=[{'from': 'human', 'value': 'Where is the circle '
                                            'right of the leftmost square on the left?'}]))
    assert out['phrase'] == 'the right circle'
    assert out['conversation'][0]['value'] == \
        'Where is the circle left of the leftmost square on the right?'


def test_decoder_reads_its_own_image_at_inference(fixture):
    """tools/infer.py packs only the MLLM's tiles: the decoder loads and resizes the image."""
    cfg = copy.deepcopy(DECODER)
    cfg['image_pipeline'] = [dict(type='LoadImageIfAny'),
                             dict(type='mmdet.Resize', scale=(SIZE, SIZE), keep_ratio=True),
                             dict(type='PackDecoderInputs')]
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(decoders=dict(perception=cfg))).eval()
    model.test_cfg['routing'] = 'forced'
    pipeline = [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=SIZE,
                                                  max_tiles=1), dict(type='PackVLMInputs')]
    from mmengine.dataset import Compose
    item = Compose(pipeline)(dict(
        img_path=str(fixture / 'images' / 'a.png'), sample_id='0', task='infer',
        conversation=[{'from': 'human', 'value': '<image>\nPlease detect circle in the image.'},
                      {'from': 'gpt', 'value': 'circle[DET]'}]))
    with torch.no_grad():
        out = model.test_step(pseudo_collate([item]))[0]
    assert out.pred_instances.label_names[0] == 'circle'
    assert out.pred_instances.masks.shape[1:] == (SIZE, SIZE)


@pytest.mark.parametrize('recipe,link,tower_trains', [
    ('grounding_dino/configs/visionllmv2_tiny_shapes_det.py', 0.02, True),
    # the regions recipe freezes its pretrained tower: none of its weights is optimised
    ('regions/configs/visionllmv2_tiny_shapes_regions_seg.py', 0.2, False)])
def test_tiny_recipes_train_decoder_and_link_at_their_rates(recipe, link, tower_trains):
    base, rates, covered = recipe_rates(
        osp.join(osp.dirname(osp.dirname(grounding_dino.__file__)), recipe),
        lambda m: dict(llm=m.llm, table=m.super_link.queries['perception'],
                       decoder=m.super_link.decoders['perception'], tower=m.vision_tower,
                       projector=m.projector))
    assert rates == dict(llm={base * link}, table={base * link}, decoder={base * 0.2},
                         tower={base} if tower_trains else set(), projector={base})
    assert covered


def test_benchmark_summary_pairs_parts_run_one_at_a_time(tmp_path):
    """`benchmark.py --which dino` then `--which superlink` into one work dir gives the
    side-by-side summary; parts of different budgets are not paired."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('gd_benchmark', osp.join(
        osp.dirname(grounding_dino.__file__), 'benchmark.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def part(name, budget, key, ap):
        with open(tmp_path / f'{name}.json', 'w') as f:
            json.dump(dict(part=name, budget_min=budget, iters=10, metrics={key: ap}), f)

    part('dino', 20.0, 'coco/bbox_mAP', 0.8)
    bench.summarise(str(tmp_path))
    assert not (tmp_path / 'summary.json').exists()  # one part only
    part('superlink', 15.0, 'det/bbox_mAP', 0.4)
    bench.summarise(str(tmp_path))
    assert not (tmp_path / 'summary.json').exists()  # different budgets
    part('superlink', 20.0, 'det/bbox_mAP', 0.4)
    bench.summarise(str(tmp_path))
    summary = json.load(open(tmp_path / 'summary.json'))
    assert summary['box_ap_ratio'] == 0.5 and summary['budget_min'] == 20.0
    assert summary['dino']['coco/bbox_mAP'] == 0.8
