"""The pose plugin: decoder, super-link routing, adapters on tiny files in the real formats,
and the metric."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from conftest import recipe_rates, tiny_model_cfg

COCO_NAMES = ['nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
              'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
              'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle']
EXTRA_WORDS = ['keypoints', 'person', 'nose', 'eye', 'ear', 'shoulder', 'elbow', 'wrist', 'hip',
               'knee', 'ankle']
TILE = 32


def pose_decoder(**kw) -> dict:
    cfg = dict(type='UniPoseDecoder', num_queries=2,
               backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8, out_indices=(2, 3),
                             norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                             init_cfg=None),
               in_channels=(32, 64), embed_dims=32,
               transformer=dict(num_heads=2, num_points=2, ffn_channels=64, num_encoder_layers=1,
                                num_box_layers=1, num_keypoint_layers=1, num_instances=5),
               max_per_img=5)
    cfg.update(kw)
    return cfg


def build_model(shared: bool = False):
    import vlm2.plugins.unipose  # noqa: F401
    from vlm2.registry import MODELS
    init_default_scope('vlm2')
    torch.manual_seed(0)
    if shared:
        decoders = dict(pose=pose_decoder(routing_tokens=['[POSE]', '[DET]']))
    else:
        decoders = dict(pose=pose_decoder(),
                        class_table=dict(type='ClassPhraseTable', num_queries=2))
    cfg = tiny_model_cfg(decoders=decoders, max_length=512, test_cfg=dict(routing='forced'),
                         tokenizer=dict(type='ShapesWorldTokenizer', extra_words=EXTRA_WORDS))
    cfg['llm']['config']['max_position_embeddings'] = 512
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def world(tmp_path_factory) -> Path:
    from vlm2.datasets.shapes_world import generate_shapes_world
    out = tmp_path_factory.mktemp('sw_pose')
    generate_shapes_world(str(out), seed=0, num_train=4, num_val=3)
    return out


@pytest.fixture(scope='module')
def coco_person(world, tmp_path_factory) -> Path:
    """A COCO person-keypoints file (17 keypoints, mmpose's coco metainfo) over two images."""
    out = tmp_path_factory.mktemp('coco_person') / 'person_keypoints.json'
    rng = np.random.default_rng(0)
    anns = []
    for i in range(2):
        xy = rng.uniform(30, 90, (17, 2))
        kpts = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
        kpts[3] = 0  # an unlabelled keypoint
        x0, y0 = xy.min(0)
        x1, y1 = xy.max(0)
        anns.append(dict(id=10 + i, image_id=i, category_id=1, iscrowd=0,
                         bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         area=float((x1 - x0) * (y1 - y0)), num_keypoints=16,
                         keypoints=kpts.ravel().round(2).tolist()))
    coco = dict(images=[dict(id=i, file_name=f'00000{i}.png', width=128, height=128)
                        for i in range(2)],
                annotations=anns,
                categories=[dict(id=1, name='person', supercategory='person',
                                 keypoints=COCO_NAMES, skeleton=[[16, 14], [14, 12]])])
    out.write_text(json.dumps(coco))
    return out


def pipeline(train: bool, ask=None, seed=0) -> list:
    steps = [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=TILE, max_tiles=1)]
    if ask:
        steps.append(dict(type='AskKeypoints', keypoints=ask))
    return steps + [dict(type='PoseTargets', scale=128, train=train, seed=seed),
                    dict(type='PackVLMInputs',
                         fields=('pose_img', 'pose_prompt', 'gt_pose', 'pose_eval'))]


def shapes_dataset(world: Path, split: str = 'train', ask=None, seed=0):
    import vlm2.plugins.unipose  # noqa: F401
    from vlm2.registry import DATASETS
    init_default_scope('vlm2')
    return DATASETS.build(dict(
        type='ShapesWorldPoseDataset', data_root=str(world),
        ann_file=f'annotations/keypoints_{split}.json',
        data_prefix=dict(img_path=f'images/{split}/'), sigmas=0.1,
        test_mode=split == 'val', pipeline=pipeline(split == 'train', ask, seed)))


def coco_dataset(world: Path, ann: Path, train: bool = True):
    import vlm2.plugins.unipose  # noqa: F401
    from vlm2.registry import DATASETS
    return DATASETS.build(dict(
        type='CocoPoseDataset', ann_file=str(ann), data_prefix=dict(img_path=str(
            world / 'images' / 'train')), test_mode=not train, pipeline=pipeline(train)))


def predict(model, samples):
    batch = pseudo_collate(copy.deepcopy(samples))
    model.eval()
    with torch.no_grad():
        return model(**model.data_preprocessor(batch, False), mode='predict')


# ---- decoder and super link ------------------------------------------------------------------
def test_keypoint_loss_reaches_pose_table_and_llm(world):
    model = build_model()
    model.train()
    ds = shapes_dataset(world)
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    losses = model(**data, mode='loss')
    assert {'pose.loss_kpt', 'pose.loss_oks', 'pose.loss_cls', 'pose.loss_bbox'} <= set(losses)
    (losses['pose.loss_kpt'] + losses['pose.loss_oks']).backward()
    table = model.super_link.queries['pose'].weight.grad
    assert table is not None and table.abs().sum() > 0
    llm_grads = [p.grad for n, p in model.llm.named_parameters() if 'layers.0.self_attn' in n]
    assert llm_grads and all(g is not None and g.abs().sum() > 0 for g in llm_grads)


def test_training_prompts_follow_the_runner_seed(world):
    from mmengine.runner import set_random_seed

    def prompts(dataset, seed):
        set_random_seed(seed)  # what the runner does with randomness.seed
        return [str(dataset[i]['data_samples'].conversation) for i in range(len(dataset))]

    varied = shapes_dataset(world, seed=None)
    first = prompts(varied, 0)
    assert prompts(shapes_dataset(world, seed=None), 0) == first  # a new build, the same seed
    assert prompts(varied, 1) != first
    assert len({str(varied[0]['data_samples'].conversation) for _ in range(12)}) > 1
    fixed = shapes_dataset(world, seed=3)  # an int fixes each sample's prompt
    assert prompts(fixed, 0) == prompts(fixed, 1)


def test_sample_without_targets_trains(world):
    """A prompt whose classes are all absent (negatives only) has no targets: the class loss
    still pushes every query to background and nothing is NaN."""
    model = build_model()
    model.train()
    sample = shapes_dataset(world)[0]
    gt = sample['data_samples'].gt_pose
    k = gt['keypoints'].shape[1]
    sample['data_samples'].gt_pose = dict(
        bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
        keypoints=torch.zeros(0, k, 3), kpt_valid=torch.zeros(0, k, dtype=torch.bool),
        sigmas=torch.zeros(0, k), areas=torch.zeros(0))
    losses = model(**model.data_preprocessor(pseudo_collate([sample]), True), mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['pose.loss_cls'] > 0 and losses['pose.loss_kpt'] == 0


@pytest.mark.parametrize('shared', [False, True])
def test_query_table_layouts(shared):
    model = build_model(shared)
    link = model.super_link
    pose = link.decoders['pose']
    if shared:  # pose-only, one table: the decoder owns both tokens and borrows none
        assert link.token_owner == {'[POSE]': 'pose', '[DET]': 'pose'}
        assert pose.borrowed_tokens == () and list(link.queries) == ['pose']
    else:  # the paper's layout: [DET] queries come from another table, pose borrows them
        assert link.token_owner == {'[POSE]': 'pose', '[DET]': 'class_table'}
        assert pose.borrowed_tokens == ('[DET]',)
        assert set(link.queries) == {'pose', 'class_table'}


def test_borrowed_token_needs_an_owner():
    import vlm2.plugins.unipose  # noqa: F401
    from vlm2.registry import MODELS
    init_default_scope('vlm2')
    cfg = tiny_model_cfg(decoders=dict(pose=pose_decoder()),
                         tokenizer=dict(type='ShapesWorldTokenizer', extra_words=EXTRA_WORDS))
    with pytest.raises(ValueError, match=r'pose.borrowed_tokens.*\[DET\]'):
        MODELS.build(cfg)


def test_keypoint_subset_in_prompt_order(world):
    model = build_model()
    ds = shapes_dataset(world, 'val', ask='center, top left corner, top')
    sample = ds[0]
    assert '[POSE]' not in sample['data_samples'].conversation[0]['value']
    out = predict(model, [sample])[0]
    pred = out.pred_pose
    assert pred.metainfo['keypoint_names'] == ['center', 'top left corner', 'top']
    assert pred.keypoints.shape[1:] == (3, 2) and pred.keypoint_scores.shape[1] == 3
    assert len(pred) > 0
    result = model.super_link.decoders['pose'].format_results(out)
    assert list(result['instances'][0]['keypoints']) == ['center', 'top left corner', 'top']


def test_variable_keypoint_sets_mix_and_batch_matches_single(world, coco_person):
    model = build_model()
    shapes = shapes_dataset(world, 'train')
    person = coco_dataset(world, coco_person)
    samples = [shapes[0], person[0], shapes[1]]
    ks = [s['data_samples'].gt_pose['keypoints'].shape[1] for s in samples]
    assert ks[1] <= 17 and len(set(ks)) > 1, ks
    # training: one batch holds both keypoint sets
    model.train()
    losses = model(**model.data_preprocessor(pseudo_collate(copy.deepcopy(samples)), True),
                   mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())
    # prediction: the batch gives what each sample gives alone
    batched = predict(model, samples)
    for sample, out in zip(samples, batched):
        single = predict(model, [sample])[0].pred_pose
        got = out.pred_pose
        assert got.metainfo['keypoint_names'] == single.metainfo['keypoint_names']
        assert got.label_names == single.label_names
        for key in ('bboxes', 'scores', 'keypoints', 'keypoint_scores'):
            torch.testing.assert_close(got[key], single[key], atol=1e-3, rtol=1e-3)


def test_decoder_reads_its_own_image_when_not_packed(world):
    """As in tools/infer.py: no pose_img, no pose_prompt; names come from the reply text."""
    model = build_model()
    model.super_link.decoders['pose'].image_scale = 64
    sample = shapes_dataset(world, 'val', ask='center, top')[0]
    for key in ('pose_img', 'pose_prompt', 'gt_pose'):
        delattr(sample['data_samples'], key)
    pred = predict(model, [sample])[0].pred_pose
    assert pred.metainfo['keypoint_names'] == ['center', 'top']
    assert set(pred.label_names) <= {'circle', 'square', 'triangle', 'star', 'hexagon'}
    assert float(pred.keypoints.max()) <= 130  # original 128 px coordinates, not 64 px ones


def test_reply_without_keypoint_phrase_gets_no_prediction(world):
    model = build_model()
    samples = [shapes_dataset(world, 'val')[i] for i in range(3)]
    classes_only = samples[0]['data_samples'].conversation[1]
    classes_only['value'] = classes_only['value'].split('; ')[0]
    keypoints_only = samples[1]['data_samples'].conversation[1]
    keypoints_only['value'] = keypoints_only['value'].split('; ')[1]
    out = predict(model, samples)
    assert 'pred_pose' not in out[0] and 'pred_pose' not in out[1]
    assert len(out[2].pred_pose.keypoints) > 0
    assert model.super_link.decoders['pose'].num_incomplete == 1  # keypoints, no class
    assert model.super_link.decoders['class_table'].num_unpaired == 1  # classes, no [POSE]


def test_draw_has_picture(world):
    model = build_model()
    out = predict(model, [shapes_dataset(world, 'val')[0]])[0]
    from vlm2.plugins.unipose.visualization import draw_pose
    img = np.full((128, 128, 3), 255, np.uint8)
    drawn = model.super_link.decoders['pose'].draw(img, out)
    assert drawn.shape == img.shape
    everything = draw_pose(img, out.pred_pose, out.pose_eval, kpt_thr=0.0, score_thr=0.0)
    assert everything.shape == img.shape and (everything != img).any()


# ---- adapters ----------------------------------------------------------------------------------
def test_keypoint_count_mismatch_names_annotation(world, tmp_path):
    coco = json.loads((world / 'annotations' / 'keypoints_train.json').read_text())
    bad = coco['annotations'][1]
    bad['keypoints'] = bad['keypoints'][:-3]
    path = tmp_path / 'bad_keypoints.json'
    path.write_text(json.dumps(coco))
    from vlm2.registry import DATASETS
    init_default_scope('vlm2')
    with pytest.raises(ValueError, match=rf'bad_keypoints.json annotation id={bad["id"]}: '
                                         r'\d+ keypoint values, but category'):
        DATASETS.build(dict(type='ShapesWorldPoseDataset', ann_file=str(path),
                            pipeline=pipeline(True)))


def test_metainfo_keypoint_count_must_match(tmp_path, coco_person):
    coco = json.loads(coco_person.read_text())
    coco['categories'][0]['keypoints'] = COCO_NAMES[:14]
    path = tmp_path / 'p.json'
    path.write_text(json.dumps(coco))
    from vlm2.registry import DATASETS
    with pytest.raises(ValueError, match='lists 14 keypoints but .*coco.py defines 17'):
        DATASETS.build(dict(type='CocoPoseDataset', ann_file=str(path), pipeline=[]))


@pytest.mark.parametrize('name,k,metric', [('AP10KDataset', 17, 'oks'),
                                           ('CrowdPoseDataset', 14, 'oks'),
                                           ('AnimalKingdomDataset', 23, 'pck'),
                                           ('Face300WDataset', 68, 'pck')])
def test_adapters_read_their_metainfo(tmp_path, name, k, metric):
    from vlm2.registry import DATASETS
    init_default_scope('vlm2')
    kpts = [10.0, 10.0, 2] * k
    coco = dict(images=[dict(id=1, file_name='a.png', width=64, height=64)],
                annotations=[dict(id=5, image_id=1, category_id=1, bbox=[0, 0, 20, 20],
                                  area=400, iscrowd=0, keypoints=kpts, num_keypoints=k)],
                categories=[dict(id=1, name='animal')])
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(coco))
    ds = DATASETS.build(dict(type=name, ann_file=str(path), pipeline=[]))
    info = ds.get_data_info(0)
    kset = info['pose_categories'][1]['keypoints']
    assert len(kset['names']) == k and info['pose_eval']['metric'] == metric
    assert kset['sigmas'] or metric == 'pck'  # OKS sets need sigmas
    assert kset['flip_pairs'] and kset['skeleton'] is not None


# ---- metric ------------------------------------------------------------------------------------
def test_metric_perfect_and_shifted_predictions(world):
    from mmengine.structures import InstanceData
    from vlm2.plugins.unipose.keypoint_sets import phrase_of
    from vlm2.registry import METRICS
    ds = shapes_dataset(world, 'val')

    def run(shift: float) -> dict:
        metric = METRICS.build(dict(type='PoseMetric'))
        for i in range(len(ds)):
            s = ds[i]['data_samples']
            ev, prompt = s.pose_eval, s.pose_prompt
            names = prompt['keypoints']
            boxes, kpts, kscores, labels = [], [], [], []
            for a in ev['anns']:
                cat = ev['categories'][a['category_id']]
                src = np.asarray(a['keypoints'], np.float32).reshape(-1, 3)
                k = np.zeros((len(names), 2), np.float32)
                ks = np.zeros(len(names), np.float32)
                for j, n in enumerate(cat['keypoints']['names']):
                    k[names.index(phrase_of(n))] = src[j, :2] + shift
                    ks[names.index(phrase_of(n))] = 0.9
                x, y, w, h = a['bbox']
                boxes.append([x, y, x + w, y + h])
                kpts.append(k)
                kscores.append(ks)
                labels.append(cat['name'])
            s.pred_pose = InstanceData(
                metainfo=dict(keypoint_names=names), bboxes=torch.tensor(boxes),
                scores=torch.full((len(boxes),), 0.9), label_names=labels,
                keypoints=torch.tensor(np.stack(kpts)), keypoint_scores=torch.tensor(
                    np.stack(kscores)))
            metric.process([], [s.to_dict()])
        return metric.compute_metrics(metric.results)

    perfect, shifted = run(0.0), run(6.0)
    assert perfect['shapes_world/AP'] == pytest.approx(1.0)
    assert perfect['shapes_world/PCK@0.2'] == pytest.approx(1.0)
    assert shifted['shapes_world/AP'] < 0.5 and shifted['shapes_world/PCK@0.2'] < 1.0


def test_tiny_recipe_trains_the_link_at_a_tenth_of_the_decoders_rate():
    base, rates, covered = recipe_rates(
        'vlm2/plugins/unipose/configs/visionllmv2_tiny_shapes_pose.py',
        lambda m: dict(llm=m.llm, pose_table=m.super_link.queries['pose'],
                       class_table=m.super_link.queries['class_table'],
                       decoder=m.super_link.decoders['pose'], projector=m.projector))
    assert rates == dict(llm={base / 10}, pose_table={base / 10}, class_table={base / 10},
                         decoder={base}, projector={base})
    assert covered
