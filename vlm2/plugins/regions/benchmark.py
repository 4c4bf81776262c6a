"""Visual-prompt benchmark: the tiny recipe with the region encoder and the perception decoder
(``configs/visionllmv2_tiny_shapes_regions_seg.py``) trained on ShapesWorld for a wall-clock
budget, then scored on held-out regions:

- interactive segmentation ("Please segment region1." → ``region1[SEG]``): mIoU and cIoU per
  prompt kind (point, scribble, box, mask);
- region recognition ("What is in region1?"): accuracy per prompt kind (point, box, mask).

Replies are generated (``routing='generate'``): the model itself has to write
``region1[SEG]`` for a mask to be drawn. The learning rate follows the recipe's shape (3%
warm-up, cosine to 1%) over the budget. Writes ``WORK_DIR/benchmark.json`` (metrics, learning
curve) and prints the metrics. Run one heavy job at a time on a shared machine::

    flock /tmp/vlm2_cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python \\
        vlm2/plugins/regions/benchmark.py --data-root /tmp/sw --budget-min 20
"""
import argparse
import json
import os
import os.path as osp
import time

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from vlm2.engine import BudgetHook
from vlm2.utils import reroot

CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), 'configs',
                  'visionllmv2_tiny_shapes_regions_seg.py')


def benchmark_config(args) -> Config:
    cfg = Config(reroot(Config.fromfile(args.config).to_dict(), args.data_root))
    cfg.model.test_cfg.routing = 'generate'
    # the region tasks only: recognition and interactive segmentation, first N per kind
    val = [d for d in cfg.val_dataloader.dataset.datasets
           if d['type'] in ('RegionRecognitionDataset', 'InteractiveSegDataset')]
    for d in val:
        d['indices'] = args.val_per_kind
    cfg.val_dataloader.dataset.datasets = val
    cfg.val_evaluator = [e for e in cfg.val_evaluator if e['type'] != 'VQAMetric']
    cfg.test_dataloader, cfg.test_evaluator = cfg.val_dataloader, cfg.val_evaluator
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.max_iters or 10 ** 7,
                         val_interval=10 ** 8)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10 ** 8)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.randomness = dict(seed=args.seed)
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG,
                        help='the recipe, or a child config of it (e.g. another vision tower)')
    parser.add_argument('--data-root', default='data/shapes_world/')
    parser.add_argument('--work-dir', default='work_dirs/regions_benchmark')
    parser.add_argument('--budget-min', type=float, default=20.0,
                        help='training wall-clock budget (the issue allows <= 20)')
    parser.add_argument('--val-per-kind', type=int, default=150,
                        help='held-out regions scored per prompt kind')
    parser.add_argument('--max-iters', type=int, default=0, help='smoke runs only')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--eval-every', type=float, default=None,
                        help='also evaluate each time this fraction of the budget is spent '
                             '(e.g. 0.25), off the clock: a learning curve of the metrics '
                             'in WORK_DIR/benchmark.json "evals"')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override keys of the recipe, as tools/train.py, e.g. '
                             'train_dataloader.dataset.ratios="[0.1,0.2,0.3,0.4]"')
    args = parser.parse_args()
    if args.budget_min > 20:
        parser.error('--budget-min: the budget is at most 20 minutes')
    os.makedirs(args.work_dir, exist_ok=True)
    runner = Runner.from_cfg(benchmark_config(args))
    hook = BudgetHook(budget_s=args.budget_min * 60, eval_every=args.eval_every)
    runner.register_hook(hook)
    runner.train()
    runner.save_checkpoint(args.work_dir, 'final.pth')
    start = time.perf_counter()
    metrics = runner.val_loop.run()
    result = dict(benchmark='regions_shapes_world', budget_min=args.budget_min,
                  iters=runner.iter, train_s=round(hook.elapsed, 1),
                  eval_s=round(time.perf_counter() - start, 1),
                  val_per_kind=args.val_per_kind,
                  metrics={k: round(float(v), 4) for k, v in metrics.items()},
                  evals=hook.evals, curve=hook.curve)
    with open(osp.join(args.work_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ('curve', 'evals')}, indent=1))


if __name__ == '__main__':
    main()
