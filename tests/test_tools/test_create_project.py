"""tools/create_project.py: a generated project trains at once, with the unchanged tools."""
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PY = sys.executable
CREATE = os.path.join(ROOT, 'tools', 'create_project.py')
SHRINK = ['model.vision_tower.config.hidden_size=32',
          'model.vision_tower.config.intermediate_size=64',
          'model.vision_tower.config.num_hidden_layers=1', 'model.llm.config.hidden_size=64',
          'model.llm.config.intermediate_size=128', 'model.llm.config.num_hidden_layers=2',
          'model.llm.config.layer_types=[sliding_attention,full_attention]',
          'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
          'train_dataloader.persistent_workers=False',
          'model.vision_tower.init_cfg=None']  # a shrunk tower: the recipe's checkpoint won't fit


def run(args, cwd, timeout=600):
    return subprocess.run([PY, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


@pytest.mark.parametrize('args, error', [
    (['Bad-Name', '--routing-token', '[XYZ]'], 'lower case letters'),
    (['counting', '--routing-token', 'XYZ'], 'upper case in brackets'),
    (['counting', '--routing-token', '[EMB]'], 'upper case in brackets'),
])
def test_refuses_bad_names_and_tokens(tmp_path, args, error):
    proc = run([CREATE, *args], cwd=str(tmp_path))
    assert proc.returncode != 0 and error in proc.stderr
    assert not os.path.exists(tmp_path / 'projects' / 'counting')


def test_refuses_to_overwrite_a_project(tmp_path):
    assert run([CREATE, 'counting', '--routing-token', '[CNT]'], str(tmp_path)).returncode == 0
    proc = run([CREATE, 'counting', '--routing-token', '[CNT]'], str(tmp_path))
    assert proc.returncode != 0 and 'exists' in proc.stderr


def test_generated_project_trains_with_the_unchanged_tools_and_its_test_passes(tmp_path):
    proc = run([CREATE, 'counting', '--routing-token', '[CNT]'], str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    proj = tmp_path / 'projects' / 'counting'
    assert sorted(os.listdir(proj)) == ['README.md', '__init__.py', 'adapters.py', 'configs',
                                        'decoder.py', 'metrics.py', 'tests']
    config = proj / 'configs' / 'counting_tiny.py'
    # outside the repository the base recipe is named by an absolute path
    assert f"_base_ = ['{ROOT}/configs/visionllmv2/visionllmv2_tiny_shapes.py']" in \
        config.read_text()
    # a few iterations with tools/train.py, from the folder holding projects/
    data = tmp_path / 'data' / 'counting'
    # in a subprocess: this process may have bound `projects` to the repository's folder
    proc = run(['-c', 'import sys; sys.path.insert(0, "."); from projects.counting.tests.'
                f'test_counting import make_data; make_data({str(data)!r})'], str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = run([os.path.join(ROOT, 'tools', 'train.py'), str(config), '--work-dir',
                str(tmp_path / 'w'), '--cfg-options', 'train_cfg.max_iters=3',
                'train_cfg.val_interval=100', 'default_hooks.logger.interval=1', *SHRINK],
               cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(glob.glob(str(tmp_path / 'w' / '*' / 'vis_data' / 'scalars.json'))[0]) as f:
        logged = [r for r in map(json.loads, f) if 'counting.loss_counting' in r]
    assert [r['step'] for r in logged] == [1, 2, 3]
    assert all(r['counting.loss_counting'] > 0 for r in logged)
    # the project's own test passes as generated
    proc = run(['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'projects/counting/tests'],
               cwd=str(tmp_path))
    assert proc.returncode == 0 and '4 passed' in proc.stdout, proc.stdout[-4000:]
