"""A synthetic depth data set, written in the NYU Depth v2 layout the adapter reads.

A pinhole camera looks over a textured floor at a back wall; shapes stand on the floor as
fronto-parallel planes at their own depth, so nearer shapes occlude farther ones and their
apparent size is ∝ 1/depth. Haze grows with depth (atmospheric perspective). The cues a
monocular model can use are the ones real scenes have: the horizon and floor position,
texture gradient, apparent size, occlusion and haze.

Layout (``out``)::

    rgb/{split}/000000.png      RGB, uint8
    depth/{split}/000000.png    16-bit PNG, depth in millimetres (0 = no depth)
    {split}_list.txt            "rgb/... depth/... focal" per line (the BTS list files)

Standalone numpy + PIL: the project uses nothing of ShapesWorld but its public formats.
"""
import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

CAMERA_HEIGHT = 1.0  # metres above the floor
MIN_DEPTH, MAX_DEPTH = 0.5, 10.0


def _polygon(kind: str, cx: float, cy_bottom: float, size: float) -> list:
    """Pixel outline of a shape of ``size`` pixels standing on row ``cy_bottom``."""
    top, half = cy_bottom - size, size / 2
    if kind == 'square':
        return [(cx - half, top), (cx + half, top), (cx + half, cy_bottom), (cx - half, cy_bottom)]
    if kind == 'triangle':
        return [(cx, top), (cx + half, cy_bottom), (cx - half, cy_bottom)]
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)  # circle
    return list(zip(cx + half * np.cos(t), cy_bottom - half + half * np.sin(t)))


def render_scene(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray, float]:
    """One scene: RGB uint8 (size, size, 3), depth in metres (size, size), focal in pixels."""
    f = float(size)
    horizon = size * rng.uniform(0.3, 0.45)
    wall = rng.uniform(6.0, 9.5)
    rows = np.arange(size, dtype=np.float64)[:, None] + 0.5
    cols = np.arange(size, dtype=np.float64)[None, :] + 0.5
    below = np.maximum(rows - horizon, 1e-6)
    depth = np.where(rows > horizon, np.minimum(f * CAMERA_HEIGHT / below, wall), wall)
    depth = np.broadcast_to(depth, (size, size)).copy()
    # floor: a checkerboard in world coordinates (texture gradient); wall: plain
    x_world = (cols - size / 2) * depth / f
    tile = rng.uniform(0.4, 0.8)
    checker = ((np.floor(x_world / tile) + np.floor(depth / tile)) % 2)[..., None]
    floor_a, floor_b, wall_rgb = (rng.uniform(40, 230, 3) for _ in range(3))
    rgb = np.where(checker > 0, floor_a, floor_b)
    rgb = np.where((depth >= wall)[..., None], wall_rgb, rgb)
    # shapes, far to near (painter's algorithm: nearer ones occlude farther ones)
    for z in sorted(rng.uniform(1.5, wall - 0.3, rng.integers(2, 6)), reverse=True):
        kind = rng.choice(['circle', 'square', 'triangle'])
        height = rng.uniform(0.4, 1.2)  # metres
        bottom = horizon + f * CAMERA_HEIGHT / z
        px = f * height / z
        cx = rng.uniform(0.1, 0.9) * size
        mask = Image.new('L', (size, size), 0)
        ImageDraw.Draw(mask).polygon(_polygon(kind, cx, bottom, px), fill=255)
        m = np.asarray(mask) > 127
        depth[m] = z
        rgb[m] = rng.uniform(30, 255, 3)
    haze = 1.0 - np.exp(-depth / 12.0)
    rgb = rgb * (1 - haze[..., None]) + np.array([200.0, 205, 215]) * haze[..., None]
    rgb = rgb + rng.normal(0, 3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), np.clip(depth, MIN_DEPTH, MAX_DEPTH), f


def generate_depth_shapes(out: str, seed: int = 0, num_train: int = 200, num_val: int = 50,
                          size: int = 128) -> dict[str, str]:
    """Write the data set under ``out``; returns the list file of each split."""
    rng = np.random.default_rng(seed)
    lists = {}
    for split, n in (('train', num_train), ('val', num_val)):
        for sub in ('rgb', 'depth'):
            os.makedirs(osp.join(out, sub, split), exist_ok=True)
        lines = []
        for i in tqdm(range(n), desc=f'depth shapes {split}', disable=n < 100):
            rgb, depth, focal = render_scene(rng, size)
            name = f'{i:06d}.png'
            Image.fromarray(rgb).save(osp.join(out, 'rgb', split, name))
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(
                osp.join(out, 'depth', split, name))
            lines.append(f'rgb/{split}/{name} depth/{split}/{name} {focal:.1f}')
        lists[split] = osp.join(out, f'{split}_list.txt')
        with open(lists[split], 'w') as fh:
            fh.write('\n'.join(lines) + '\n')
    return lists


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Generate the synthetic depth data set')
    parser.add_argument('--out', required=True)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=1000)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--size', type=int, default=128)
    a = parser.parse_args()
    print(generate_depth_shapes(a.out, a.seed, a.num_train, a.num_val, a.size))
