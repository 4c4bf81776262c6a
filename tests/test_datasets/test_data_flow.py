"""Adapters, mixing and task-homogeneous batching."""
import json

import numpy as np
import pytest
from mmengine.dataset import DefaultSampler
from mmengine.registry import init_default_scope
from PIL import Image

from vlm2.datasets import LLaVADataset, MixedDataset, TaskBatchSampler
from vlm2.datasets.transforms import closest_grid

PIPELINE = [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=32, max_tiles=4),
            dict(type='PackVLMInputs')]


def llava_file(tmp_path, n=4, image=True, name='llava.json'):
    (tmp_path / 'images').mkdir(exist_ok=True)
    records = []
    for i in range(n):
        rec = dict(id=f'r{i}', conversations=[
            {'from': 'human', 'value': ('<image>\n' if image else '') + 'how many?'},
            {'from': 'gpt', 'value': str(i)}])
        if image:
            Image.new('RGB', (64, 32), (i * 40, 0, 0)).save(tmp_path / 'images' / f'{i}.png')
            rec['image'] = f'{i}.png'
        records.append(rec)
    (tmp_path / name).write_text(json.dumps(records))
    return str(tmp_path / name)


def dataset(path, task='vqa', **kw):
    init_default_scope('vlm2')
    return LLaVADataset(ann_file=path, data_prefix=dict(img_path=str(path.rsplit('/', 1)[0]) +
                                                        '/images'), pipeline=PIPELINE,
                        task=task, **kw)


def test_llava_records_become_tiles_and_samples(tmp_path):
    ds = dataset(llava_file(tmp_path))
    item = ds[1]
    # a 2:1 image → a 2x1 grid of 32-px tiles plus the thumbnail, RGB
    assert item['inputs'].shape == (3, 3, 32, 32)
    assert item['inputs'][0, 0].float().mean() == pytest.approx(40, abs=1)
    s = item['data_samples']
    assert s.task == 'vqa' and s.conversation[1]['value'] == '1'
    assert s.metainfo['sample_id'] == 'r1'


def test_text_only_records_have_no_tiles(tmp_path):
    item = dataset(llava_file(tmp_path, image=False))[0]
    assert item['inputs'] is None


def test_missing_image_names_file_and_sample(tmp_path):
    path = llava_file(tmp_path)
    (tmp_path / 'images' / '2.png').unlink()
    with pytest.raises(FileNotFoundError, match=r'llava.json sample r2.*2.png'):
        dataset(path)[2]


@pytest.mark.parametrize('content, message', [
    ('{"not": "a list"}', 'expected a list'),
    ('[{"id": 1, "conversations": [', 'not valid JSON'),
    ('[{"id": 1}]', 'record 0 has no "conversations"'),
])
def test_corrupt_annotation_file_names_the_file(tmp_path, content, message):
    (tmp_path / 'bad.json').write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        dataset(str(tmp_path / 'bad.json'))
    assert 'bad.json' in str(info.value)


def test_closest_grid_follows_the_aspect_ratio():
    assert closest_grid(64, 32, 4, 32) == (2, 1)
    assert closest_grid(32, 96, 4, 32) == (1, 3)
    assert closest_grid(100, 100, 4, 32) == (2, 2)
    assert closest_grid(100, 100, 1, 32) == (1, 1)


def test_mixed_dataset_ratios(tmp_path):
    a = dataset(llava_file(tmp_path, 4, False, 'a.json'), task='a')
    b = dataset(llava_file(tmp_path, 10, False, 'b.json'), task='b')
    mixed = MixedDataset([a, b], ratios=[3, 1], length=400)
    tasks = [mixed.get_task(i) for i in range(len(mixed))]
    assert len(mixed) == 400 and tasks.count('a') == 300 and tasks.count('b') == 100
    # the small source repeats evenly: each of its 4 samples 75 times
    counts = np.bincount([i for d, i in mixed.index if d == 0])
    assert counts.tolist() == [75, 75, 75, 75]
    plain = MixedDataset([a, b])
    assert len(plain) == 14 and plain[5]['data_samples'].task == 'b'
    with pytest.raises(ValueError, match='ratios'):
        MixedDataset([a, b], ratios=[1])


def test_batches_are_task_homogeneous_and_identical_across_ranks(tmp_path):
    a = dataset(llava_file(tmp_path, 30, False, 'a.json'), task='a')
    b = dataset(llava_file(tmp_path, 18, False, 'b.json'), task='b')
    mixed = MixedDataset([a, b])
    families = []
    for rank in (0, 1):
        sampler = DefaultSampler(mixed, shuffle=True, seed=3)
        sampler.rank, sampler.world_size = rank, 2
        sampler.num_samples = len(mixed) // 2
        sampler.total_size = sampler.num_samples * 2
        batches = list(TaskBatchSampler(sampler, batch_size=4))
        assert batches
        for bt in batches:
            assert len(bt) == 4 and len({mixed.get_task(i) for i in bt}) == 1
        families.append([mixed.get_task(bt[0]) for bt in batches])
    n = min(map(len, families))
    # the family of each step is the same on every rank: global batches are homogeneous
    assert families[0][:n] == families[1][:n]
