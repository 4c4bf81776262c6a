"""What the super link costs in detection: the tiny VisionLLM v2 with the perception decoder
against a plain mmdet DINO, each trained on ShapesWorld for the same wall-clock budget.

1. ``superlink``: ``configs/visionllmv2_tiny_shapes_det.py`` (tiny LLM + tiny Grounding DINO
   fed with super-link phrase embeddings, VQA + detection + segmentation + grounding mixed),
   evaluated with forced routing (the class list is given, as perception benchmarks do):
   COCO box AP ([DET] prompts), mask AP ([SEG] prompts), REC P@0.5, RES cIoU.
2. ``dino``: mmdet's DINO with the same backbone, neck, widths, layers and queries, fixed
   class embeddings, detection only, batch 4, AdamW 2e-4: COCO box AP.

``--init-from CKPT`` starts the super-link model from a trained MLLM checkpoint (the paper's
stage 1, e.g. the one ``make demo`` writes) instead of from scratch.

The learning rate follows the recipe's shape (3% warm-up, cosine to 1%) over the time budget
instead of a number of iterations, and training stops when the budget is spent. Each part runs
in its own process; results go to ``WORK_DIR/{part}.json``, and once both parts of one budget
are there (``--which both``, or one part at a time into one work dir) ``summary.json``
pairs them.

    OMP_NUM_THREADS=2 flock /tmp/vlm2_cpu.lock .venv/bin/python \\
        vlm2/plugins/grounding_dino/benchmark.py --data-root /tmp/sw --budget-min 10
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

from mmengine.config import DictAction

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(osp.dirname(HERE)))
CONFIG = osp.join(HERE, 'configs', 'visionllmv2_tiny_shapes_det.py')


def init_from_hook_cls():
    from mmengine.hooks import Hook

    class InitFromMLLM(Hook):
        """Starts the super-link model from a trained MLLM checkpoint (the paper's stage 1,
        e.g. the ``make demo`` one), after the runner's own weight initialisation. Tensors
        of equal shape are copied; token-embedding rows are copied where the vocabularies
        overlap, since the decoders append their routing tokens; the rest stays as
        initialised and is counted in the log."""
        priority = 'VERY_HIGH'

        def __init__(self, path: str) -> None:
            self.path = path

        def before_train(self, runner) -> None:
            import torch
            state = torch.load(self.path, map_location='cpu', weights_only=False)
            state = state.get('state_dict', state)
            copied, rows, skipped = 0, 0, []
            with torch.no_grad():
                for name, param in runner.model.state_dict().items():
                    src = state.get(name)
                    if src is None:
                        skipped.append(name)
                    elif src.shape == param.shape:
                        param.copy_(src)
                        copied += 1
                    elif src.shape[1:] == param.shape[1:] and src.shape[0] < param.shape[0]:
                        param[:src.shape[0]].copy_(src)
                        rows += 1
                    else:
                        skipped.append(name)
            runner.logger.info(f'init from {self.path}: {copied} tensors copied, {rows} '
                               f'embedding tables copied row-wise, {len(skipped)} left as '
                               'initialised')

    return InitFromMLLM


def superlink_cfg(args):
    from mmengine.config import Config
    from vlm2.utils import reroot, set_link_lr_mult
    cfg = Config(reroot(Config.fromfile(args.config).to_dict(), args.data_root))
    cfg.model.test_cfg.routing = 'forced'
    # evaluate detection, segmentation and REC (with forced routing a VQA answer is given;
    # RES is left to the recipe's validation to keep the benchmark's evaluation short)
    cfg.val_dataloader.dataset.datasets = cfg.val_dataloader.dataset.datasets[1:4]
    cfg.val_evaluator = cfg.val_evaluator[1:4]
    if args.link_lr_mult is not None:
        set_link_lr_mult(cfg, args.link_lr_mult)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def dino_cfg(args):
    """mmdet DINO with the tiny decoder's backbone, widths and layers; 5 fixed classes."""
    from mmengine.config import Config
    sw = Config.fromfile(args.config).perception.detector
    classes = ('circle', 'square', 'triangle', 'star', 'hexagon')
    enc = dict(num_layers=sw.encoder.num_layers, layer_cfg=sw.encoder.layer_cfg)
    dec = dict(num_layers=sw.decoder.num_layers, return_intermediate=True, post_norm_cfg=None,
               layer_cfg=dict(self_attn_cfg=sw.decoder.layer_cfg.self_attn_cfg,
                              cross_attn_cfg=sw.decoder.layer_cfg.cross_attn_cfg,
                              ffn_cfg=sw.decoder.layer_cfg.ffn_cfg))
    backbone = dict(sw.backbone, out_indices=(1, 2))
    model = dict(
        type='DINO', num_queries=sw.num_queries, with_box_refine=True, as_two_stage=True,
        num_feature_levels=sw.num_feature_levels, data_preprocessor=sw.data_preprocessor,
        backbone=backbone, neck=sw.neck, encoder=enc, decoder=dec,
        positional_encoding=sw.positional_encoding,
        bbox_head=dict(type='DINOHead', num_classes=len(classes), sync_cls_avg_factor=True,
                       loss_cls=sw.bbox_head.loss_cls, loss_bbox=sw.bbox_head.loss_bbox,
                       loss_iou=sw.bbox_head.loss_iou),
        dn_cfg=sw.dn_cfg,
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=2.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
        test_cfg=dict(max_per_img=100))
    root = args.data_root
    train_pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='RandomChoiceResize', scales=[(112, 112), (128, 128), (144, 144)],
             keep_ratio=True),
        dict(type='PackDetInputs')]
    test_pipeline = [
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                              'scale_factor'))]

    def dataset(split, pipeline, test):
        return dict(type='CocoDataset', data_root=root, metainfo=dict(classes=classes),
                    ann_file=f'annotations/instances_{split}.json',
                    data_prefix=dict(img=f'images/{split}/'), pipeline=pipeline,
                    test_mode=test, filter_cfg=dict(filter_empty_gt=False))
    return Config(dict(
        default_scope='mmdet', model=model,
        train_dataloader=dict(batch_size=4, num_workers=1, persistent_workers=True,
                              sampler=dict(type='InfiniteSampler', shuffle=True),
                              dataset=dataset('train', train_pipeline, False)),
        val_dataloader=dict(batch_size=16, num_workers=1, persistent_workers=True,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            dataset=dataset('val', test_pipeline, True)),
        val_evaluator=dict(type='CocoMetric', metric='bbox',
                           ann_file=osp.join(root, 'annotations/instances_val.json')),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=10 ** 7, val_interval=10 ** 8),
        val_cfg=dict(type='ValLoop'),
        optim_wrapper=dict(type='OptimWrapper', clip_grad=dict(max_norm=0.1),
                           optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4)),
        default_hooks=dict(timer=dict(type='IterTimerHook'),
                           logger=dict(type='LoggerHook', interval=50),
                           checkpoint=dict(type='CheckpointHook', interval=10 ** 8)),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
                     mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0)),
        log_processor=dict(type='LogProcessor', window_size=50, by_epoch=False),
        randomness=dict(seed=0), log_level='INFO'))


def run_part(args) -> None:
    import torch
    from mmengine.runner import Runner
    sys.path.insert(0, ROOT)
    from vlm2.engine import BudgetHook
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
    if args.which == 'superlink':
        cfg = superlink_cfg(args)
        cfg.train_cfg.max_iters = 10 ** 7
        cfg.train_cfg.val_interval = 10 ** 8
        cfg.param_scheduler = []
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10 ** 8)
        cfg.env_cfg.dist_cfg = dict(backend='gloo')
    else:
        cfg = dino_cfg(args)
    cfg.work_dir = osp.join(args.work_dir, args.which)
    if args.max_iters:
        cfg.train_cfg.max_iters = args.max_iters
    runner = Runner.from_cfg(cfg)
    hook = BudgetHook(budget_s=args.budget_min * 60, eval_every=args.eval_every)
    runner.register_hook(hook)
    if args.init_from and args.which == 'superlink':
        runner.register_hook(init_from_hook_cls()(args.init_from))
    start = time.time()
    runner.train()
    train_s = time.time() - start
    iters = runner.iter
    runner.save_checkpoint(cfg.work_dir, 'final.pth')
    metrics = runner.val()
    result = dict(part=args.which, budget_min=args.budget_min,
                  train_seconds=round(train_s, 1), iters=iters,
                  eval_seconds=round(time.time() - start - train_s, 1),
                  metrics={k: float(v) for k, v in metrics.items()}, evals=hook.evals,
                  curve=hook.curve)
    with open(osp.join(args.work_dir, f'{args.which}.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ('curve', 'evals')}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world/')
    parser.add_argument('--config', default=CONFIG,
                        help='the super-link recipe (default: the tiny ShapesWorld one)')
    parser.add_argument('--work-dir', default='work_dirs/grounding_dino_benchmark')
    parser.add_argument('--budget-min', type=float, default=10.0,
                        help='training wall-clock budget per model (the issue allows <= 20)')
    parser.add_argument('--which', choices=['superlink', 'dino', 'both'], default='both')
    parser.add_argument('--max-iters', type=int, default=0, help='smoke runs only')
    parser.add_argument('--eval-every', type=float, default=None,
                        help='also evaluate each time this fraction of the budget is spent '
                             '(e.g. 0.25), off the clock: a learning curve of the metrics '
                             'in WORK_DIR/{part}.json "evals"')
    parser.add_argument('--init-from', default=None,
                        help='start the super-link model from this MLLM checkpoint (stage 1)')
    parser.add_argument('--link-lr-mult', type=float, default=None,
                        help="lr multiplier of the LLM and the query tables (default: the "
                             "recipe's 0.02, a tenth of the decoder's rate)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override keys of the super-link recipe, as tools/train.py, e.g. '
                             'train_dataloader.dataset.ratios="[0.1,0.2,0.3,0.3,0.1]"')
    args = parser.parse_args()
    if args.budget_min > 20:
        parser.error('--budget-min: the budget is at most 20 minutes')
    os.makedirs(args.work_dir, exist_ok=True)
    if args.which != 'both':
        run_part(args)
        summarise(args.work_dir)
        return
    for part in ('superlink', 'dino'):
        cmd = [sys.executable, __file__, '--which', part, '--data-root', args.data_root,
               '--config', args.config,
               '--work-dir', args.work_dir, '--budget-min', str(args.budget_min),
               '--max-iters', str(args.max_iters)] + \
            (['--eval-every', str(args.eval_every)] if args.eval_every else []) + \
            (['--init-from', args.init_from] if args.init_from else []) + \
            (['--link-lr-mult', str(args.link_lr_mult)] if args.link_lr_mult is not None else []) + \
            (['--cfg-options'] + [f'{k}={v}' for k, v in args.cfg_options.items()]
             if args.cfg_options else [])
        subprocess.run(cmd, check=True, cwd=ROOT)
    summarise(args.work_dir)


def summarise(work_dir: str) -> None:
    """Writes ``summary.json`` (both parts side by side and the box-AP ratio) once both parts'
    results are in ``work_dir`` and ran for the same budget, so that parts run one at a time
    (``--which dino``, then ``--which superlink``) are compared too."""
    paths = {p: osp.join(work_dir, f'{p}.json') for p in ('superlink', 'dino')}
    if not all(osp.exists(path) for path in paths.values()):
        return
    res = {p: json.load(open(path)) for p, path in paths.items()}
    budgets = {p: r.get('budget_min') for p, r in res.items()}
    if budgets['superlink'] != budgets['dino']:
        print(f'{work_dir}: no summary, the parts ran for different budgets {budgets}')
        return
    ours = res['superlink']['metrics'].get('det/bbox_mAP')
    plain = res['dino']['metrics'].get('coco/bbox_mAP')
    summary = dict(
        budget_min=budgets['dino'],
        superlink=dict(iters=res['superlink']['iters'], **res['superlink']['metrics']),
        dino=dict(iters=res['dino']['iters'], **res['dino']['metrics']),
        box_ap_ratio=round(ours / plain, 3) if ours is not None and plain else None)
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()
