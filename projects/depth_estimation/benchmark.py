"""Train the tiny [DEPTH] recipe on synthetic depth shapes and compare it with a constant.

    flock /tmp/vlm2_cpu.lock env OMP_NUM_THREADS=2 python projects/depth_estimation/benchmark.py \
        --work-dir work_dirs/depth_benchmark --max-iters 500

Generates the data set (NYU layout), trains with the unchanged ``tools/train.py`` (the
recipe's last validation is on held-out images, with the reply generated: the LLM must
emit ``[DEPTH]`` itself), and scores the best constant depth (the median training depth)
on the same images with the same metric. Writes ``benchmark.json`` in the work dir.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from projects.depth_estimation.metrics import depth_errors  # noqa: E402
from projects.depth_estimation.synthetic import generate_depth_shapes  # noqa: E402
from projects.depth_estimation.transforms import read_depth  # noqa: E402

CONFIG = osp.join(ROOT, 'projects', 'depth_estimation', 'configs',
                  'visionllmv2_tiny_shapes_depth.py')


def constant_baseline(root: str) -> tuple[float, dict]:
    """The median valid training depth, scored on every validation image."""
    def maps(split):
        with open(osp.join(root, f'{split}_list.txt')) as f:
            return [read_depth(osp.join(root, line.split()[1]), 1000.0)
                    for line in f if line.strip()]
    train = np.concatenate([d[d > 0] for d in maps('train')])
    const = float(np.median(train))
    errs = [depth_errors(np.full_like(d, const), d) for d in maps('val')]
    return const, {k: float(np.mean([e[k] for e in errs])) for k in errs[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default='work_dirs/depth_benchmark')
    p.add_argument('--max-iters', type=int, default=500)
    p.add_argument('--num-train', type=int, default=1000)
    p.add_argument('--num-val', type=int, default=100)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--max-train-seconds', type=float, default=480,
                   help='training ends early past this (the budget is 10 min on 2 CPU cores)')
    a = p.parse_args()
    a.work_dir = osp.abspath(a.work_dir)
    data = osp.join(a.work_dir, 'data')
    if not osp.isfile(osp.join(data, 'val_list.txt')):
        generate_depth_shapes(data, seed=0, num_train=a.num_train, num_val=a.num_val)
    const, base = constant_baseline(data)
    data = osp.abspath(data) + '/'
    warmup = max(1, int(0.03 * a.max_iters))
    os.makedirs(a.work_dir, exist_ok=True)
    config = osp.join(a.work_dir, 'benchmark_config.py')
    with open(config, 'w') as f:  # the recipe, with this run's data, length and time budget
        f.write(f"""_base_ = [{CONFIG!r}]
train_dataloader = dict(batch_size={a.batch_size})
train_cfg = dict(max_iters={a.max_iters}, val_interval={a.max_iters})
param_scheduler = [  # warm-up and cosine follow the shortened run
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end={warmup}),
    dict(type='CosineAnnealingLR', by_epoch=False, begin={warmup}, end={a.max_iters},
         eta_min_ratio=0.01)]
default_hooks = dict(checkpoint=dict(interval={a.max_iters}))
custom_hooks = [dict(type='TrainTimeLimitHook', max_seconds={a.max_train_seconds})]
""")
    start = time.time()
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                    '--work-dir', a.work_dir, '--cfg-options',
                    f'train_dataloader.dataset.datasets.0.data_root={data}',
                    f'val_dataloader.dataset.datasets.0.data_root={data}'],
                   cwd=ROOT, check=True)
    seconds = time.time() - start
    logs = sorted(glob.glob(osp.join(a.work_dir, '*', 'vis_data', 'scalars.json')))
    with open(logs[-1]) as f:
        records = [json.loads(line) for line in f]
    final = [r for r in records if 'depth/delta1' in r][-1]
    with open(osp.join(a.work_dir, 'last_checkpoint')) as f:  # iter_N.pth: N < max if cut
        trained = int(re.search(r'iter_(\d+)\.pth', f.read()).group(1))
    result = dict(iters=trained, max_iters=a.max_iters, train_and_val_seconds=round(seconds, 1),
                  model={k.split('/')[1]: final[k] for k in final if k.startswith('depth/')},
                  constant_baseline=dict(depth_m=const, **base),
                  num_train=a.num_train, num_val=a.num_val)
    print(json.dumps(result, indent=1))
    with open(osp.join(a.work_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
