"""Evaluate a checkpoint with MMEngine's runner (as mmdet's tools/test.py)."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from vlm2.utils import adapt_to_cpu, allow_project_imports


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a vlm2 model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='dump the predictions to a pickle file')
    parser.add_argument('--show-dir', help='write a picture of each prediction to this dir '
                        '(relative to the work dir)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.test_cfg.routing=forced')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    allow_project_imports()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show_dir:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='PredictionPictureHook', show_dir=args.show_dir)]
    adapt_to_cpu(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(
            runner.build_evaluator(dict(type='DumpResults', out_file_path=args.out)).metrics[0])
    runner.test()


if __name__ == '__main__':
    main()
