"""Benchmark of the generation plugin: train the tiny recipe on ShapesWorld text-to-image and
editing within a time budget, then score held-out prompts with the analyser.

Run from the repository root (2 CPU cores)::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/benchmark.py --budget-min 20

It trains only the [GEN] and [EDIT] sources (no VQA) on the 1-shape subset (captions of
images with one shape; edits whose source image has one shape), evaluates on the 1-shape
subset of the validation split (held-out images), measures the latency of one
64x64 image at 20 scheduler steps, and writes ``benchmark.json`` and ``grid.png`` to the work
dir. The learning rate warms up and decays on a cosine over the training budget's minutes
(``--lr-schedule time``), and training stops when they are spent or at ``--max-iters``; the
evaluation time is counted in the total budget. ``condition_probe`` in the
report says, for decoders with a text encoder, how often the link's condition tokens are
nearest their text's (``condition_probe.py``), word by word.

The default ``--data-root`` is a ShapesWorld of one shape per image (4,000 training and 100
validation images, seed 0), written on the first run when the folder is missing: the main
data set has 494 one-shape training images, fewer than its 540 (kind, colour, size, place)
combinations.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from vlm2.engine import BudgetHook, TaskMixHook  # noqa: E402
from vlm2.plugins.diffusion.condition_probe import ConditionRecorder  # noqa: E402
from vlm2.utils import set_link_lr_mult  # noqa: E402

RECIPE = osp.join(osp.dirname(osp.abspath(__file__)), 'configs',
                  'visionllmv2_tiny_shapes_gen.py')
#: The default data set: generate_shapes_world arguments of the one-shape ShapesWorld.
ONE_SHAPE_WORLD = dict(seed=0, num_train=4000, num_val=100, max_shapes=1)


def one_shape_subsets(data_root: str, out_dir: str) -> dict:
    """Write the 1-shape subsets of captions and edits; returns their paths and sizes."""
    from vlm2.plugins.diffusion.analyser import parse_objects
    out = {}
    for split in ('train', 'val'):
        ann = osp.join(data_root, 'annotations')
        with open(osp.join(ann, f'captions_{split}.jsonl')) as f:
            caps = [json.loads(line) for line in f if line.strip()]
        one = {c['image'] for c in caps if len(parse_objects(c['caption'])) == 1}
        with open(osp.join(ann, f'edits_{split}.jsonl')) as f:
            edits = [json.loads(line) for line in f if line.strip()]
        # an edit's source is its scene's image: edits/<split>/<stem>_src.png ↔ <split>/<stem>.png
        edits = [e for e in edits if f'{split}/{osp.basename(e["source"])[:-8]}.png' in one]
        for name, rows in (('captions', [c for c in caps if c['image'] in one]),
                           ('edits', edits)):
            path = osp.join(out_dir, f'{name}_{split}_1shape.jsonl')
            with open(path, 'w') as f:
                f.writelines(json.dumps(r) + '\n' for r in rows)
            out[f'{name}_{split}'] = dict(path=path, num=len(rows))
    return out


def ensure_one_shape_world(data_root: str) -> None:
    """Write the benchmark's one-shape ShapesWorld to ``data_root`` if it has no annotations."""
    if osp.isfile(osp.join(data_root, 'annotations', 'captions_train.jsonl')):
        return
    from vlm2.datasets.shapes_world import generate_shapes_world
    print(f'{data_root} has no ShapesWorld; writing one with {ONE_SHAPE_WORLD}', flush=True)
    generate_shapes_world(data_root, **ONE_SHAPE_WORLD)


def analyser_ceiling(data_root: str, size: int = 64) -> dict:
    """Generation faithfulness of the validation captions' own images, resized to ``size``:
    what the analyser reads correctly on clean pictures (its ceiling), for all captions and
    the 1-shape ones."""
    from vlm2.plugins.diffusion.analyser import analyse_image, check_generation, parse_objects
    from vlm2.plugins.diffusion.transforms import load_rgb, square_image
    with open(osp.join(data_root, 'annotations', 'captions_val.jsonl')) as f:
        caps = [json.loads(line) for line in f if line.strip()]
    hits = {'all': [], '1shape': []}
    for c in caps:
        img = square_image(load_rgb(osp.join(data_root, 'images', c['image'])), size)
        asked = parse_objects(c['caption'])
        ok = check_generation(analyse_image(img), asked)['faithful']
        hits['all'].append(ok)
        if len(asked) == 1:
            hits['1shape'].append(ok)
    return {k: dict(faithfulness=sum(v) / max(len(v), 1), num=len(v)) for k, v in hits.items()}


def ensure_pretrained(cfg: Config, data_root: str, vae_minutes: float,
                      sd_minutes: float, ip2p_minutes: float = 15.0) -> dict:
    """Pretrain on ``data_root`` every folder the decoders name that does not exist yet: VAEs
    (``vae_pretrain.py``), then text-to-image UNets with their text encoder
    (``sd_pretrain.py``, in the latents of the decoder's VAE), then editing UNets of their own
    (``ip2p_pretrain.py``, from a text-to-image decoder's folder). Returns the reports of
    those written, by folder."""
    from vlm2.plugins.diffusion import ip2p_pretrain, sd_pretrain, vae_pretrain
    reports = {}
    decoders = cfg.model.super_link.decoders.values()
    for dec in decoders:
        path = (dec.get('vae') or {}).get('pretrained')
        if path and path not in reports and not osp.isdir(path):
            print(f'{path} does not exist; pretraining a VAE there for {vae_minutes} min, '
                  'then its decoder alone (vae_pretrain.py)', flush=True)
            reports[path] = vae_pretrain.pretrain_vae(data_root, path, minutes=vae_minutes)

    def editing(dec) -> bool:
        return dec.get('type') == 'ImageEditDecoder'

    sd_folder = None
    for dec in sorted(decoders, key=editing):  # text-to-image first: IP2P starts from its SD
        path = dec.unet.get('pretrained')
        vae = (dec.get('vae') or {}).get('pretrained')
        if not editing(dec):
            sd_folder = sd_folder or path
        if not path or path in reports or osp.isdir(path):
            continue
        if editing(dec) and sd_folder not in (None, path):
            print(f'{path} does not exist; pretraining a tiny InstructPix2Pix there from '
                  f'{sd_folder} for {ip2p_minutes} min', flush=True)
            reports[path] = ip2p_pretrain.pretrain_ip2p(
                data_root, path, sd_folder, minutes=ip2p_minutes,
                cfg_options={'model.super_link.decoders.edit.vae.pretrained': vae} if vae
                else None)
            continue
        print(f'{path} does not exist; pretraining a tiny Stable Diffusion there for '
              f'{sd_minutes} min', flush=True)
        reports[path] = sd_pretrain.pretrain_sd(
            data_root, path, minutes=sd_minutes,
            cfg_options={'model.super_link.decoders.gen.vae.pretrained': vae} if vae
            else None)
    return reports


def parse_phases(items: list[str], tasks: list[str]) -> list[dict]:
    """``--task-phases`` items, ``START:task=weight,...`` (e.g. ``0:gen=1 0.3:gen=1,edit=2``),
    as ``TaskMixHook`` phases, checked against the trained ``tasks`` before any pretraining."""
    phases = []
    for item in items:
        try:
            start, mix = item.split(':')
            weights = {k: float(v) for k, v in (kv.split('=') for kv in mix.split(','))}
        except ValueError:
            raise SystemExit(f'--task-phases {item!r}: expected START:task=weight,... '
                             '(e.g. 0.3:gen=1,edit=2)') from None
        if set(weights) - set(tasks):
            raise SystemExit(f'--task-phases {item!r}: {sorted(set(weights) - set(tasks))} '
                             f'not among --tasks {tasks}')
        phases.append(dict(start=float(start), weights=weights))
    return phases


def build_cfg(args, subsets: dict) -> Config:
    cfg = Config.fromfile(args.config)
    root = osp.abspath(args.data_root) + '/'
    gen_train, edit_train = cfg.gen_train, cfg.edit_train
    gen_val, edit_val = cfg.gen_val, cfg.edit_val
    for d, key in ((gen_train, 'captions_train'), (edit_train, 'edits_train'),
                   (gen_val, 'captions_val'), (edit_val, 'edits_val')):
        d.data_root = root
        d.ann_file = subsets[key]['path']
    train = dict(gen=gen_train, edit=edit_train)
    val = dict(gen=gen_val, edit=edit_val)
    cfg.train_dataloader.dataset.datasets = [train[t] for t in args.tasks]
    cfg.train_dataloader.dataset.ratios = [1.0] * len(args.tasks)
    cfg.train_dataloader.batch_size = args.batch_size
    cfg.val_dataloader.dataset.datasets = [val[t] for t in args.tasks]
    cfg.test_dataloader = cfg.val_dataloader
    # edit accuracy also by the stricter rule of earlier sessions' numbers: an added shape
    # within edit_tol of where the reference drew it in the asked cell
    cfg.val_evaluator = [dict(type='ShapesGenerationMetric'),
                         dict(type='ShapesGenerationMetric', gen_tasks=(), add_place='reference',
                              prefix='shapes_add_at_reference')]
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.val_interval = 10 ** 9  # evaluated once, after the budget
    if args.lr_schedule == 'time':  # BudgetHook sets the rate; --max-iters only caps
        cfg.train_cfg.max_iters = args.max_iters or 10 ** 9
        cfg.param_scheduler = []
    else:
        if not args.max_iters:
            raise SystemExit('--lr-schedule iters needs --max-iters: the schedule\'s length')
        cfg.train_cfg.max_iters = args.max_iters
        warm = max(1, int(0.03 * args.max_iters))
        cfg.param_scheduler[0].end = warm
        cfg.param_scheduler[1].begin = warm
        cfg.param_scheduler[1].end = args.max_iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10 ** 9)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    if args.link_lr_mult is not None:
        set_link_lr_mult(cfg, args.link_lr_mult)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def latency(model, pipeline, repeats: int = 3) -> dict:
    """Seconds for one 64x64 image at 20 steps: the whole reply (LLM + sampling) and the
    sampling alone."""
    model.eval()
    item = pipeline(dict(img_path=None, sample_id='lat', task='gen', conversation=[
        {'from': 'human', 'value': 'Generate an image of a large red circle in the center.'}]))
    dec = model.super_link.decoders['gen']
    full, sampling = [], []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            out = model.test_step(pseudo_collate([item]))[0]
            full.append(time.perf_counter() - t)
            cond = dec.conditioner.unconditional(1)
            t = time.perf_counter()
            img = dec.generate(cond, num_steps=20)
            sampling.append(time.perf_counter() - t)
    return dict(reply_and_image_s=statistics.median(full),
                sampling_only_s=statistics.median(sampling), image_shape=list(img.shape[1:]),
                num_steps=20, guidance_scale=dec.test_cfg['guidance_scale'],
                routed=out.get('pred_image') is not None)


def grid(model, datasets, out_path: str, num: int = 6) -> None:
    """Prompts and pictures: generated | reference for [GEN]; source | edited | reference
    for [EDIT]."""
    rows = []
    model.eval()
    for ds in datasets:
        items = [ds[i] for i in range(min(num, len(ds)))]
        with torch.no_grad():
            samples = model.test_step(pseudo_collate(items))
        for s in samples:
            ref = s.target_image.permute(1, 2, 0).numpy()
            pred = s.get('pred_image')
            pred = np.zeros_like(ref) if pred is None else np.asarray(pred)
            pics = [ref * 0 + 255, pred, ref] if s.task == 'gen' else \
                [s.source_image.permute(1, 2, 0).numpy(), pred, ref]
            text = s.get('caption') or s.get('instruction')
            rows.append((s.task, text, pics))
    scale, pad, text_h = 2, 4, 14
    side = rows[0][2][0].shape[0] * scale
    width = 3 * (side + pad) + pad
    canvas = Image.new('RGB', (width, len(rows) * (side + text_h + pad) + pad), 'white')
    draw = ImageDraw.Draw(canvas)
    for r, (task, text, pics) in enumerate(rows):
        y = pad + r * (side + text_h + pad)
        draw.text((pad, y), f'[{task.upper()}] {text}'[:70], fill=(0, 0, 0))
        for c, pic in enumerate(pics):
            if task == 'gen' and c == 0:
                continue
            img = Image.fromarray(pic).resize((side, side), Image.NEAREST)
            canvas.paste(img, (pad + c * (side + pad), y + text_h))
    canvas.save(out_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape',
                        help='a ShapesWorld folder; written (one shape per image) if missing')
    parser.add_argument('--config', default=RECIPE,
                        help='the recipe (default: the tiny ShapesWorld generation one)')
    parser.add_argument('--work-dir', default='work_dirs/diffusion_benchmark')
    parser.add_argument('--budget-min', type=float, default=20.0,
                        help='total minutes: training stops early enough to leave '
                             '--eval-min for evaluation, latency and the grid')
    parser.add_argument('--eval-min', type=float, default=2.5)
    parser.add_argument('--lr-schedule', choices=('time', 'iters'), default='time',
                        help='time (default): warm-up and cosine over the training budget, so '
                             'a run the budget stops still ends at a low rate; iters: the '
                             "config's schedule over --max-iters (the runs before 5 Dec 2026, "
                             'eighteenth session, which a slower machine cut mid-schedule)')
    parser.add_argument('--max-iters', type=int, default=0,
                        help='the last iteration (0: the budget decides); with --lr-schedule '
                             'iters also the schedule\'s length')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tasks', nargs='+', choices=('gen', 'edit'), default=['gen', 'edit'],
                        help='the decoders to train and score (default: both)')
    parser.add_argument('--task-phases', nargs='+', default=None, metavar='START:MIX',
                        help='a curriculum over the tasks (TaskMixHook): from START (a fraction '
                             'of the training budget) on, each step is a task drawn with these '
                             'weights, e.g. 0:gen=1 0.3:gen=1,edit=2 trains [GEN] alone for '
                             'the first 30%%, then both, [EDIT] twice as often (default: 1:1 '
                             'throughout)')
    parser.add_argument('--checkpoint', default=None,
                        help='skip training: score this checkpoint of the same config '
                             '(e.g. with other --cfg-options test settings)')
    parser.add_argument('--link-lr-mult', type=float, default=None,
                        help="lr multiplier of the LLM and the query tables (default: the "
                             "recipe's 0.1)")
    parser.add_argument('--vae-minutes', type=float, default=20.0,
                        help='pretraining minutes of a VAE the config names but that does not '
                             'exist yet, before 15 of its decoder alone (not counted in '
                             "--budget-min, as the paper's VAE is pretrained)")
    parser.add_argument('--sd-minutes', type=float, default=42.0,
                        help='pretraining minutes of a UNet folder the config names but that '
                             'does not exist yet (sd_pretrain.py; not counted in --budget-min, '
                             "as the paper's Stable Diffusion is pretrained)")
    parser.add_argument('--ip2p-minutes', type=float, default=15.0,
                        help='pretraining minutes of an editing UNet folder the config names '
                             'but that does not exist yet (ip2p_pretrain.py, from the '
                             "text-to-image folder; not counted in --budget-min, as the paper's "
                             'InstructPix2Pix is pretrained). The README\'s edit accuracy needs '
                             'the longer chain of its twenty-second session')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override keys of the recipe, as tools/train.py')
    args = parser.parse_args()
    # checked now, not after the pretraining
    mix = TaskMixHook(parse_phases(args.task_phases, args.tasks)) if args.task_phases else None
    start = time.time()
    # Adam's decaying moments of rarely used parameters drift into denormal floats, which
    # CPUs process many times slower; values below 1e-38 do not matter to training.
    torch.set_flush_denormal(True)
    os.makedirs(args.work_dir, exist_ok=True)
    ensure_one_shape_world(args.data_root)
    subsets = one_shape_subsets(args.data_root, args.work_dir)
    cfg = build_cfg(args, subsets)
    t = time.time()
    pretrained = ensure_pretrained(cfg, args.data_root, args.vae_minutes, args.sd_minutes,
                                   args.ip2p_minutes)
    start += time.time() - t  # a pretrained part, outside the budget
    train_s = max(60.0, (args.budget_min - args.eval_min) * 60 - (time.time() - start))
    runner = Runner.from_cfg(cfg)
    if args.checkpoint:
        runner.load_checkpoint(args.checkpoint)
        train_time, iters, task_steps = 0.0, 0, None
    else:
        runner.register_hook(BudgetHook(budget_s=train_s,
                                        schedule_lr=args.lr_schedule == 'time'))
        if mix:
            runner.register_hook(mix)
        runner.train()
        train_time = time.time() - start
        iters = runner.iter
        task_steps = mix.steps if mix else None
        runner.save_checkpoint(args.work_dir, 'final.pth')
    model = runner.model
    recorders = {k: ConditionRecorder(d) for k, d in model.super_link.decoders.items()
                 if hasattr(d, 'conditioner')}
    t = time.time()
    metrics = runner.val_loop.run()
    eval_time = time.time() - t
    for r in recorders.values():
        r.remove()
    from vlm2.apis import build_inference_pipeline
    model.cfg = cfg
    lat = latency(model, build_inference_pipeline(cfg))
    val_sets = runner.val_dataloader.dataset.datasets
    grid(model, val_sets, osp.join(args.work_dir, 'grid.png'))
    result = dict(command=' '.join(sys.argv), torch_threads=torch.get_num_threads(),
                  iterations=iters, task_phases=args.task_phases, task_steps=task_steps,
                  lr_schedule=args.lr_schedule, batch_size=args.batch_size,
                  train_minutes=train_time / 60,
                  eval_minutes=eval_time / 60, total_minutes=(time.time() - start) / 60,
                  subsets={k: v['num'] for k, v in subsets.items()},
                  analyser_on_reference_images=analyser_ceiling(args.data_root),
                  pretrained_here=pretrained,
                  metrics={k: float(v) for k, v in metrics.items()}, latency=lat,
                  condition_probe={k: r.accuracy() for k, r in recorders.items()})
    with open(osp.join(args.work_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
