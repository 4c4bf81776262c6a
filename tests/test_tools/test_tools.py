"""The thin tools over MMEngine's runner, run as a user runs them."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from mmengine.config import Config, DictAction

from conftest import ROOT

TEST_CFG = os.path.join(ROOT, 'tests', 'fixtures', 'configs', 'tiny_shapes_test.py')
PY = sys.executable


@pytest.fixture(scope='session')
def shapes(tmp_path_factory):
    from vlm2.datasets.shapes_world import generate_shapes_world
    out = tmp_path_factory.mktemp('shapes_world')
    generate_shapes_world(str(out), seed=0, num_train=24, num_val=8)
    return str(out)


def data_options(root):
    return [f'train_dataloader.dataset.datasets.0.data_root={root}',
            f'val_dataloader.dataset.datasets.0.data_root={root}',
            f'test_dataloader.dataset.datasets.0.data_root={root}']


def tool(name, *args, cwd=ROOT, launcher=None, env=None):
    cmd = [PY, os.path.join(ROOT, 'tools', name), *args]
    if launcher:
        cmd = [PY, '-m', 'torch.distributed.run', '--nproc_per_node', str(launcher),
               '--master_port', '29517', os.path.join(ROOT, 'tools', name), *args,
               '--launcher', 'pytorch']
    full_env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=full_env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def losses(work_dir, rank=0):
    with open(os.path.join(work_dir, f'losses_rank{rank}.jsonl')) as f:
        return {r['iter']: r for r in map(json.loads, f)}


def recorder_options():
    return ['custom_imports.imports=[vlm2.plugins.chat,loss_recorder]',
            'custom_hooks=[dict(type=LossRecorderHook)]']


def test_config_inheritance_and_cfg_options():
    cfg = Config.fromfile(TEST_CFG)
    assert cfg.default_scope == 'vlm2' and cfg.model.type == 'VisionLLMv2'
    llm = cfg.model.llm.config
    assert llm.hidden_size == 64  # overridden by the child
    assert llm.max_position_embeddings == 512  # inherited from _base_/models
    assert cfg.train_dataloader.batch_sampler.type == 'TaskBatchSampler'  # _base_/datasets
    assert cfg.param_scheduler[1].type == 'CosineAnnealingLR'  # _base_/schedules
    parsed = {}
    DictAction(option_strings=[], dest='x')(None, parsed, ['model.llm.config.hidden_size=32',
                                                           'train_cfg.max_iters=3'])
    cfg.merge_from_dict(parsed['x'])
    assert cfg.model.llm.config.hidden_size == 32 and cfg.train_cfg.max_iters == 3
    assert cfg.model.llm.config.num_hidden_layers == 2


def test_resumed_training_continues_with_the_same_loss(shapes, tmp_path):
    env = dict(PYTHONPATH=os.path.join(ROOT, 'tests', 'fixtures'))
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    common = data_options(shapes) + recorder_options()
    tool('train.py', TEST_CFG, '--work-dir', full, '--cfg-options', *common, env=env)
    tool('train.py', TEST_CFG, '--work-dir', part, '--cfg-options', 'train_cfg.max_iters=3',
         *common, env=env)
    tool('train.py', TEST_CFG, '--work-dir', part, '--resume', '--cfg-options', *common,
         env=env)
    a, b = losses(full), losses(part)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for it in (4, 5, 6):
        assert b[it]['loss'] == pytest.approx(a[it]['loss'], rel=1e-4), it
    assert a[6]['loss'] != a[1]['loss']


def test_test_tool_evaluates_and_draws(shapes, tmp_path):
    work = str(tmp_path / 'w')
    tool('train.py', TEST_CFG, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=3',
         *data_options(shapes))
    proc = tool('test.py', TEST_CFG, os.path.join(work, 'iter_3.pth'), '--work-dir', work,
                '--show-dir', 'show', '--out', str(tmp_path / 'preds.pkl'), '--cfg-options',
                *data_options(shapes))
    assert 'vqa/accuracy' in proc.stdout + proc.stderr
    assert 'majority baseline' in proc.stdout + proc.stderr
    assert len(os.listdir(os.path.join(work, 'show'))) == 8
    assert os.path.getsize(tmp_path / 'preds.pkl') > 0
    out = tool('infer.py', TEST_CFG, os.path.join(work, 'iter_3.pth'), '--img',
               os.path.join(shapes, 'images', 'val', '000000.png'), '--prompt',
               'How many circles are there?', 'Is there a red star?')
    assert out.stdout.count('->') == 2


def test_plugin_from_a_dropped_in_folder_trains_with_the_unchanged_tool(shapes, tmp_path):
    """A folder outside the package, reached only through custom_imports from the cwd."""
    proj = tmp_path / 'projects' / 'count_task'
    proj.mkdir(parents=True)
    (tmp_path / 'projects' / '__init__.py').write_text('')
    (proj / '__init__.py').write_text(textwrap.dedent('''
        import json
        import torch
        import torch.nn.functional as F
        from vlm2.datasets import LLaVADataset
        from vlm2.models import BaseTaskDecoder
        from vlm2.registry import DATASETS, MODELS

        @MODELS.register_module()
        class CountDecoder(BaseTaskDecoder):
            routing_tokens = ('[COUNT]',)
            num_queries = 2
            def __init__(self, llm_hidden_size, **kw):
                super().__init__(llm_hidden_size, **kw)
                self.head = torch.nn.Linear(llm_hidden_size, 1)
            def loss(self, phrases, samples):
                pred = torch.cat([self.head(p.select('[COUNT]').mean(1)).view(-1)
                                  for p in phrases])
                target = torch.tensor([float(s.count) for s in samples])
                return dict(loss_count=F.mse_loss(pred, target))
            def predict(self, phrases, samples):
                for p, s in zip(phrases, samples):
                    s.pred_count = float(self.head(p.select('[COUNT]').mean(1)).view(-1)[0])
                return samples

        @DATASETS.register_module()
        class CountDataset(LLaVADataset):
            def load_data_list(self):
                infos = []
                for info in super().load_data_list():
                    turns = info['conversation']
                    for q, a in zip(turns[::2], turns[1::2]):
                        if a['value'].isdigit():
                            infos.append(dict(info, count=int(a['value']), conversation=[
                                dict(q, value='<image>\\n' + q['value'].replace('<image>', '')
                                     .strip()),
                                {'from': 'gpt', 'value': 'the number[COUNT]'}]))
                return infos
        '''))
    (proj / 'config.py').write_text(textwrap.dedent(f'''
        _base_ = ['{TEST_CFG}']
        custom_imports = dict(imports=['vlm2.plugins.chat', 'projects.count_task',
                                       'loss_recorder'])
        custom_hooks = [dict(type='LossRecorderHook')]
        model = dict(super_link=dict(decoders=dict(count=dict(type='CountDecoder'))))
        pipe = [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=128,
                                                   max_tiles=1),
                dict(type='PackVLMInputs', fields=('count',))]
        train_dataloader = dict(dataset=dict(_delete_=True, type='MixedDataset', datasets=[
            dict(type='CountDataset', task='count', data_root='{shapes}',
                 ann_file='annotations/llava_train.json', data_prefix=dict(img_path='images/'),
                 pipeline=pipe)]))
        '''))
    tool('train.py', str(proj / 'config.py'), '--work-dir', str(tmp_path / 'w'),
         '--cfg-options', 'train_cfg.max_iters=2', cwd=str(tmp_path),
         env=dict(PYTHONPATH=os.path.join(ROOT, 'tests', 'fixtures')))
    logged = losses(str(tmp_path / 'w'))
    assert set(logged) == {1, 2} and all('count.loss_count' in r for r in logged.values())


@pytest.mark.slow
def test_two_process_ddp_on_cpu_logs_the_same_loss_on_both_ranks(shapes, tmp_path):
    work = str(tmp_path / 'ddp')
    tool('train.py', TEST_CFG, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=3',
         *data_options(shapes), *recorder_options(), launcher=2,
         env=dict(PYTHONPATH=os.path.join(ROOT, 'tests', 'fixtures')))
    r0, r1 = losses(work, 0), losses(work, 1)
    assert sorted(r0) == sorted(r1) == [1, 2, 3]
    for it in r0:
        assert r0[it]['loss'] == pytest.approx(r1[it]['loss'], rel=1e-6)
