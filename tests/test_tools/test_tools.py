"""The thin tools over MMEngine's runner, run as a user runs them."""
import argparse
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest
from mmengine.config import Config, DictAction

from conftest import ROOT, save_tiny_pretrained

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


def test_config_inheritance_and_cfg_options():
    cfg = Config.fromfile(TEST_CFG)
    assert cfg.default_scope == 'vlm2' and cfg.model.type == 'VisionLLMv2'
    llm = cfg.model.llm.config
    assert llm.hidden_size == 64  # overridden by the child
    assert llm.max_position_embeddings == 512  # inherited from _base_/models
    assert cfg.train_dataloader.batch_sampler.type == 'TaskBatchSampler'  # _base_/datasets
    assert cfg.param_scheduler[1].type == 'CosineAnnealingLR'  # _base_/schedules
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', 'model.llm.config.hidden_size=32',
                              'train_cfg.max_iters=3'])
    cfg.merge_from_dict(args.cfg_options)
    assert cfg.model.llm.config.hidden_size == 32 and cfg.train_cfg.max_iters == 3
    assert cfg.model.llm.config.num_hidden_layers == 2


def test_resumed_training_continues_with_the_same_loss(shapes, tmp_path):
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    common = data_options(shapes)
    tool('train.py', TEST_CFG, '--work-dir', full, '--cfg-options', *common)
    tool('train.py', TEST_CFG, '--work-dir', part, '--cfg-options', 'train_cfg.max_iters=3',
         *common)
    tool('train.py', TEST_CFG, '--work-dir', part, '--resume', '--cfg-options', *common)
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
    with open(os.path.join(shapes, 'annotations', 'llava_val.json')) as f:
        num_questions = len(json.load(f))
    assert len(os.listdir(os.path.join(work, 'show'))) == num_questions
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
        custom_imports = dict(imports=['vlm2.plugins.chat', 'projects.count_task'])
        custom_hooks = []
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
         '--cfg-options', 'train_cfg.max_iters=2', *data_options(shapes), cwd=str(tmp_path))
    scalars = glob.glob(str(tmp_path / 'w' / '*' / 'vis_data' / 'scalars.json'))
    with open(scalars[0]) as f:
        logged = [r for r in map(json.loads, f) if 'loss' in r]
    assert [r['step'] for r in logged] == [1, 2]
    assert all(r['count.loss_count'] > 0 for r in logged)


def test_7b_stage1_recipe_runs_when_shrunk(shapes, tmp_path):
    """The paper-scale recipe, unchanged but for local tiny folders and a few samples."""
    words = ['how', 'many', 'is', 'there', 'a', 'red', 'circle', 'yes', 'no', '?']
    save_tiny_pretrained(str(tmp_path), words, image_size=336, patch_size=84)
    cfg = os.path.join(ROOT, 'configs', 'visionllmv2', 'visionllmv2_7b_stage1.py')
    tool('train.py', cfg, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
         f'model.llm.pretrained={tmp_path}/llm', 'model.llm.torch_dtype=float32',
         f'model.tokenizer.path={tmp_path}/llm', f'model.vision_tower.pretrained={tmp_path}/clip',
         f'train_dataloader.dataset.datasets.0.data_root={shapes}',
         'train_dataloader.dataset.datasets.0.ann_file=annotations/llava_train.json',
         'train_dataloader.dataset.datasets.0.data_prefix.img_path=images/',
         'train_dataloader.dataset.datasets.0.indices=4', 'train_dataloader.batch_size=2',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'optim_wrapper.accumulative_counts=1',
         # 3 % warm-up of 2 iterations rounds to nothing: give it half the run
         'param_scheduler.0.end=0.5', 'param_scheduler.1.begin=0.5')
    assert any(f.endswith('.pth') for f in os.listdir(tmp_path / 'w'))


def test_tower_pretraining_then_the_mllm_starts_from_its_tower(shapes, tmp_path):
    """make demo's first step, shrunk: tools/train.py on the tower-pretraining recipe, then
    the MLLM recipe loads that tower (strictly) before its first iteration."""
    pre, work = str(tmp_path / 'pre'), str(tmp_path / 'w')
    tower = ['hidden_size=32', 'intermediate_size=64', 'num_hidden_layers=2',
             'num_attention_heads=2']  # as the test recipe shrinks it
    tool('train.py', os.path.join(ROOT, 'configs', 'visionllmv2',
                                  'visionllmv2_tiny_tower_pretrain.py'),
         '--work-dir', pre, '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'default_hooks.logger.interval=1',
         *[f'model.vision_tower.config.{t}' for t in tower],
         *[f'{loader}.{k}' for loader in ('train_dataloader', 'val_dataloader')
           for k in (f'dataset.data_root={shapes}', 'batch_size=4', 'num_workers=0',
                     'persistent_workers=False')])
    with open(glob.glob(os.path.join(pre, '*', 'vis_data', 'scalars.json'))[0]) as f:
        logged = list(map(json.loads, f))
    assert [r['step'] for r in logged if 'loss_color' in r] == [1, 2]
    assert 0 <= logged[-1]['patch/color_fg_acc'] <= 1
    config = tmp_path / 'from_pretrained_tower.py'
    config.write_text(f"_base_ = ['{TEST_CFG}']\nmodel = dict(vision_tower=dict(init_cfg=dict(\n"
                      f"    _delete_=True, type='Pretrained', checkpoint='{pre}/iter_2.pth')))\n")
    proc = tool('train.py', str(config), '--work-dir', work, '--cfg-options',
                'train_cfg.max_iters=1', *data_options(shapes))
    import torch
    state = torch.load(f'{pre}/iter_2.pth', map_location='cpu', weights_only=False)['state_dict']
    tower = sum(k.startswith('vision_tower.') for k in state)  # the heads are left behind
    assert 0 < tower < len(state)
    assert f'VisionTower: loaded {tower} tensors from {pre}/iter_2.pth' in \
        proc.stdout + proc.stderr


@pytest.mark.slow
def test_make_tower_writes_the_checkpoint_the_demo_starts_from():
    """`make tower` trains the Makefile's TOWER_CONFIG into the folder of the demo's checkpoint:
    it must write that file name, or `make demo` would stop on a missing tower."""
    with open(os.path.join(ROOT, 'Makefile')) as f:
        make = dict(line.split(' := ') for line in f.read().splitlines() if ' := ' in line)
    tower = Config.fromfile(os.path.join(ROOT, make['TOWER_CONFIG']))
    demo = Config.fromfile(os.path.join(ROOT, make['CONFIG'])).model.vision_tower
    written = f'iter_{tower.train_cfg.max_iters}.pth'
    assert os.path.basename(demo.init_cfg.checkpoint) == written
    assert tower.default_hooks.checkpoint.interval == tower.train_cfg.max_iters
    assert demo.frozen  # the pretrained tower stays frozen, as the paper's CLIP


@pytest.mark.parametrize('recipe', sorted(
    glob.glob(os.path.join(ROOT, '**', 'configs', '**', '*tiny_shapes*.py'), recursive=True)))
def test_no_tiny_recipe_freezes_a_tower_it_does_not_load(recipe):
    """The demo freezes its pretrained tower; a recipe that inherits it and drops the
    checkpoint (init_cfg=None) must also unfreeze, or its tower stays random."""
    tower = Config.fromfile(recipe).model.vision_tower
    loads = (tower.get('init_cfg') or {}).get('checkpoint') or tower.get('pretrained')
    assert loads or not tower.get('frozen', True), recipe


def test_two_process_ddp_on_cpu_logs_the_same_loss_on_both_ranks(shapes, tmp_path):
    work = str(tmp_path / 'ddp')
    tool('train.py', TEST_CFG, '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=3',
         *data_options(shapes), launcher=2)
    r0, r1 = losses(work, 0), losses(work, 1)
    assert sorted(r0) == sorted(r1) == [1, 2, 3]
    for it in r0:
        assert r0[it]['loss'] == pytest.approx(r1[it]['loss'], rel=1e-6)
