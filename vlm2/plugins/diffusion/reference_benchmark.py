"""The issue's reference rebuilt with plain diffusers: a pixel-space ``UNet2DConditionModel``
conditioned on learned embeddings of the caption's (size, colour, kind, place) words, trained
on one-shape ShapesWorld pictures and scored by the same analyser as ``benchmark.py``.

No vlm2 decoder, LLM or conditioner is in the training path, so this tells what the UNet
itself learns on these cores in a budget; ``fixed_condition_benchmark.py`` asks the same of
the recipe's decoder. Run from the repository root (2 CPU cores)::

    OMP_NUM_THREADS=2 .venv/bin/python vlm2/plugins/diffusion/reference_benchmark.py \\
        --budget-min 9 --eval-every 3

Defaults are the issue's reference settings (32 px, channels 32/64/64, one layer per block,
cross-attention dim 64, batch 16, AdamW 3e-4, 10% condition dropout, 20 DDIM steps). What
the issue leaves open follows the tiny recipe: attention at 16 and 8 px in 2 heads, 8 norm
groups, the cosine schedule with v-prediction sampled from t=999. ``--unet-options`` and
``--scheduler-options`` change either. With ``class_embed_type='projection'`` the UNet also
reads the concatenated word embeddings through its time embedding. ``--eval-every`` scores
the held-out prompts during training (the clock stops while it does), giving a learning
curve. ``--vae FOLDER`` trains in the latents of a local ``AutoencoderKL`` (one written by
``vae_pretrain.py``; use ``--size 64``) instead of pixels. Writes ``reference.json`` and
``grid.png`` to the work dir.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler,  # noqa: E402
                       UNet2DConditionModel)
from mmengine.config import DictAction  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from vlm2.plugins.diffusion.analyser import parse_objects  # noqa: E402
from vlm2.plugins.diffusion.benchmark import RECIPE, ensure_one_shape_world  # noqa: E402
from vlm2.plugins.diffusion.metrics import shapes_scores  # noqa: E402
from vlm2.plugins.diffusion.transforms import to_uint8  # noqa: E402

WIDTH = 64
UNET = dict(in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
            up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'),
            cross_attention_dim=WIDTH, attention_head_dim=2, norm_num_groups=8)
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2',
                 prediction_type='v_prediction', timestep_spacing='trailing')
ATTRIBUTES = ('size', 'color', 'kind', 'position')


def load_split(data_root: str, split: str, size: int) -> tuple[list[str], Tensor]:
    """The one-shape captions of a split and their pictures in [-1, 1], (N, 3, size, size)."""
    path = osp.join(data_root, 'annotations', f'captions_{split}.jsonl')
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if len(parse_objects(r['caption'])) == 1]
    if not rows:
        raise ValueError(f'{path}: no caption names exactly one shape')
    images = [np.asarray(Image.open(osp.join(data_root, 'images', r['image'])).convert('RGB')
                         .resize((size, size), Image.BICUBIC))
              for r in tqdm(rows, desc=f'{split} pictures')]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return [r['caption'] for r in rows], x


class WordCondition(nn.Module):
    """Learned embeddings of a caption's attribute words, one token per attribute."""

    def __init__(self, captions: list[str]) -> None:
        super().__init__()
        words = sorted({f'{k}:{getattr(parse_objects(c)[0], k)}'
                        for c in captions for k in ATTRIBUTES})
        self.index = {w: i for i, w in enumerate(words)}
        self.embed = nn.Embedding(len(words), WIDTH)

    def ids(self, captions: list[str]) -> Tensor:
        try:
            return torch.tensor([[self.index[f'{k}:{getattr(parse_objects(c)[0], k)}']
                                  for k in ATTRIBUTES] for c in captions])
        except KeyError as e:
            raise ValueError(f'the word {e} of a validation caption never occurs in '
                             'training') from None

    def forward(self, ids: Tensor) -> Tensor:
        return self.embed(ids)


class EncodedCondition(nn.Module):
    """A text encoder's embeddings of the captions, looked up by caption index: the tiny
    recipe's ``text_encoder`` of its [GEN] decoder, the condition it aligns the super link
    to. Frozen, as the recipe has it, or with ``trainable`` its weights learn with the UNet
    (as the word tokens do), to tell the condition's form from its being learned."""

    def __init__(self, captions: list[str], config: str = RECIPE, trainable: bool = False,
                 zero_padding: bool = False) -> None:
        super().__init__()
        from mmengine.config import Config
        from vlm2.plugins.diffusion.builders import FrozenTextEncoder
        key = 'model.super_link.decoders.gen.text_encoder'
        enc_cfg = Config.fromfile(config).model.super_link.decoders.gen.text_encoder.to_dict()
        self.encoder = FrozenTextEncoder(key=f'{config}: {key}',
                                         **{**enc_cfg, 'zero_padding': zero_padding})
        self.encoder.model.requires_grad_(trainable)
        self.register_buffer('ids', self.encoder.tokenize(captions))

    def forward(self, index: Tensor) -> Tensor:
        return self.encoder.embed(self.ids[index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world_1shape',
                        help='a ShapesWorld folder; written (one shape per image) if missing')
    parser.add_argument('--work-dir', default='work_dirs/diffusion_reference')
    parser.add_argument('--budget-min', type=float, default=9.0, help='training minutes')
    parser.add_argument('--eval-every', type=float, default=0.0,
                        help='score the held-out prompts every so many training minutes')
    parser.add_argument('--size', type=int, default=32, help='picture side in pixels')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=3e-4)
    parser.add_argument('--cond-dropout', type=float, default=0.1)
    parser.add_argument('--num-steps', type=int, default=20)
    parser.add_argument('--guidance-scales', type=float, nargs='+', default=[3.0, 5.0],
                        help='the first one is used for the learning curve and grid.png')
    parser.add_argument('--timestep-shift', type=float, default=1.0,
                        help='draw training timesteps as SD3 does, u -> s*u / (1 + (s-1)*u) '
                             'for u ~ U(0, 1): s > 1 trains more at high noise')
    parser.add_argument('--vae', default=None,
                        help='a local AutoencoderKL folder: train on its latents of the '
                             'pictures (scaled by its scaling_factor) instead of pixels')
    parser.add_argument('--bf16', action='store_true',
                        help='train under bfloat16 autocast (sampling stays float32)')
    parser.add_argument('--condition', default='words',
                        choices=('words', 'text-encoder', 'trained-text-encoder'),
                        help="'words': learned embeddings of the caption's attribute words "
                             "(the issue's reference); 'text-encoder': the tiny recipe's "
                             "frozen text encoder's embedding of the whole caption (77 "
                             "tokens), the super link's alignment target; "
                             "'trained-text-encoder': that encoder, trained with the UNet")
    parser.add_argument('--zero-padding', action='store_true',
                        help="with a text encoder, zero the padding tokens' embeddings")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--unet-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--scheduler-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # Adam's denormal moments are slow on CPU
    torch.manual_seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    ensure_one_shape_world(args.data_root)
    train_caps, train_x = load_split(args.data_root, 'train', args.size)
    val_caps, val_x = load_split(args.data_root, 'val', args.size)
    if args.condition == 'words':
        words = WordCondition(train_caps)
        train_ids, val_ids = words.ids(train_caps), words.ids(val_caps)
    else:
        words = EncodedCondition(train_caps + val_caps,
                                 trainable=args.condition == 'trained-text-encoder',
                                 zero_padding=args.zero_padding)
        train_ids = torch.arange(len(train_caps))
        val_ids = torch.arange(len(val_caps)) + len(train_caps)
    vae = (AutoencoderKL.from_pretrained(args.vae, local_files_only=True).eval() if args.vae
           else None)
    if vae is not None:  # latents once, from the posterior's mean (a common cache)
        with torch.no_grad():
            train_x = torch.cat([vae.encode(train_x[i:i + 64]).latent_dist.mode()
                                 for i in range(0, len(train_x), 64)])
        train_x = train_x * vae.config.scaling_factor
    shape = train_x.shape[1:]
    unet_cfg = dict(UNET, sample_size=shape[-1], in_channels=shape[0], out_channels=shape[0],
                    **args.unet_options)
    if unet_cfg.get('class_embed_type') == 'projection':
        unet_cfg.setdefault('projection_class_embeddings_input_dim',
                            words(val_ids[:1]).flatten(1).shape[1])
    unet = UNet2DConditionModel(**unet_cfg)
    # latents are not confined to [-1, 1] as pixels are: do not clip the x0 estimates
    scheduler_cfg = {**SCHEDULER, 'clip_sample': vae is None, **args.scheduler_options}
    noise = DDPMScheduler(**scheduler_cfg)

    def predict(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        labels = cond.flatten(1) if unet.config.class_embed_type == 'projection' else None
        return unet(x, t, encoder_hidden_states=cond, class_labels=labels).sample

    @torch.no_grad()
    def sample(cond: Tensor, scale: float) -> np.ndarray:
        sampler = DDIMScheduler.from_config(noise.config)
        sampler.set_timesteps(args.num_steps)
        x = torch.randn((cond.shape[0], *shape),
                        generator=torch.Generator().manual_seed(args.seed))
        null = torch.zeros_like(cond)  # the dropped condition of training
        for t in sampler.timesteps:
            uncond, c = predict(torch.cat([x, x]), t.repeat(2 * len(x)),
                                torch.cat([null, cond])).chunk(2)
            x = sampler.step(uncond + scale * (c - uncond), t, x).prev_sample
        if vae is not None:
            x = vae.decode(x / vae.config.scaling_factor).sample
        return to_uint8(x).numpy()

    references = to_uint8(val_x).numpy()

    @torch.no_grad()
    def evaluate(scale: float) -> tuple[dict, np.ndarray]:
        unet.eval()
        images = np.concatenate([sample(words(val_ids[i:i + 25]), scale)
                                 for i in range(0, len(val_ids), 25)])
        unet.train()
        return shapes_scores([dict(task='gen', caption=c, target_image=r, pred_image=p)
                              for c, r, p in zip(val_caps, references, images)]), images

    def curve_point(scores: dict) -> dict:
        return dict(minutes=round(clock / 60, 1), iterations=it,
                    loss=round(float(np.mean(losses[-50:])), 4), **scores)

    opt = torch.optim.AdamW(list(unet.parameters()) + list(words.parameters()), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    clock, it, losses, curve = 0.0, 0, [], []
    next_eval = args.eval_every * 60 or float('inf')
    bar = tqdm(desc='train (reference UNet)', unit='it')
    while clock < args.budget_min * 60:
        start = time.time()
        idx = torch.randint(0, len(train_ids), (args.batch_size,), generator=gen)
        x0, cond = train_x[idx], words(train_ids[idx])
        drop = torch.rand(len(idx), generator=gen) < args.cond_dropout
        cond = torch.where(drop[:, None, None], torch.zeros_like(cond), cond)
        eps = torch.randn(x0.shape, generator=gen)
        u = torch.rand(len(idx), generator=gen)
        u = args.timestep_shift * u / (1 + (args.timestep_shift - 1) * u)
        steps = noise.config.num_train_timesteps
        t = (u * steps).long().clamp(max=steps - 1)
        goal = (noise.get_velocity(x0, eps, t) if noise.config.prediction_type == 'v_prediction'
                else eps)
        with torch.autocast('cpu', torch.bfloat16, enabled=args.bf16):
            pred = predict(noise.add_noise(x0, eps, t), t, cond)
        loss = F.mse_loss(pred.float(), goal)
        opt.zero_grad()
        loss.backward()
        opt.step()
        clock += time.time() - start
        it += 1
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f'{np.mean(losses[-50:]):.4f}')
        # the curve's last point is the final evaluation below, not a second one here
        if next_eval <= clock < args.budget_min * 60:
            curve.append(curve_point(evaluate(args.guidance_scales[0])[0]))
            bar.write(json.dumps(curve[-1]))
            next_eval += args.eval_every * 60
    bar.close()
    by_scale = {}
    for scale in args.guidance_scales:
        by_scale[scale], images = evaluate(scale)
        if len(by_scale) == 1:
            rows = [np.concatenate(list(images[r * 6:r * 6 + 6]), 1) for r in range(4)]
            Image.fromarray(np.concatenate(rows, 0)).save(osp.join(args.work_dir, 'grid.png'))
            if args.eval_every:
                curve.append(curve_point(by_scale[scale]))
    result = dict(command=' '.join(sys.argv), iterations=it, train_minutes=round(clock / 60, 2),
                  final_loss=float(np.mean(losses[-50:])), unet=unet_cfg,
                  scheduler=dict(noise.config), metrics_by_guidance_scale=by_scale,
                  learning_curve=curve)
    with open(osp.join(args.work_dir, 'reference.json'), 'w') as f:
        json.dump(result, f, indent=1, default=str)
    print(json.dumps(dict(iterations=it, metrics_by_guidance_scale=by_scale), indent=1))


if __name__ == '__main__':
    main()
