"""The region encoder: one embedding per visual prompt (paper §3.1, "region encoder")."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlm2.registry import MODELS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map (as in ConvNeXt / SAM)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@MODELS.register_module()
class RegionEncoder(nn.Module):
    """Encodes a binary prompt mask over an image into one LLM-width embedding.

    concat(RGB, mask) → Conv k/k (64) → LN → GELU → Conv 2/2 (256) → LN → GELU → Conv 1×1
    (vision width), with ``k = patch_size / 2`` so the grid matches the vision tower's patch
    grid (the paper's 7×7 for a 14-px patch). The grid is added to each of the tower's last
    ``num_levels`` layers, up to ``max_points`` points inside the mask are sampled from each
    fused map and averaged, projected to the LLM width, and the levels are averaged.

    Args:
        vision_width / llm_width / patch_size: taken from the tower and the LLM by the model.
        num_levels: how many of the tower's last layers are fused (paper: 3).
        max_points: points sampled inside a mask (paper: 2304).
    """

    def __init__(self, vision_width: int, llm_width: int, patch_size: int,
                 num_levels: int = 3, max_points: int = 2304) -> None:
        super().__init__()
        if patch_size % 2:
            raise ValueError(f'model.region_encoder: the tower\'s patch size must be even to '
                             f'map a mask onto its grid with two strided convs, got {patch_size}')
        k = patch_size // 2
        self.mask_stem = nn.Sequential(
            nn.Conv2d(4, 64, k, stride=k), LayerNorm2d(64), nn.GELU(),
            nn.Conv2d(64, 256, 2, stride=2), LayerNorm2d(256), nn.GELU(),
            nn.Conv2d(256, vision_width, 1))
        self.proj = nn.Linear(vision_width, llm_width)
        self.num_levels = num_levels
        self.max_points = max_points

    def sample_points(self, mask: Tensor) -> Tensor:
        """Up to ``max_points`` (x, y) in [-1, 1] inside ``mask`` (H, W): a random subset in
        training, an even one in evaluation."""
        ys, xs = mask.nonzero(as_tuple=True)
        if len(ys) > self.max_points:
            keep = torch.randperm(len(ys), device=mask.device)[:self.max_points] \
                if self.training else torch.linspace(0, len(ys) - 1, self.max_points,
                                                     device=mask.device).long()
            ys, xs = ys[keep], xs[keep]
        h, w = mask.shape
        return torch.stack([(xs + 0.5) / w * 2 - 1, (ys + 0.5) / h * 2 - 1], dim=-1)

    def forward(self, images: Tensor, masks: Tensor, levels: Sequence[Tensor]) -> Tensor:
        """Embeddings of ``R`` regions.

        Args:
            images: (R, 3, S, S) the normalised global tile each region is drawn on.
            masks: (R, S, S) binary prompt masks; each must be non-empty.
            levels: the tower's last layers for those tiles, each (R, G*G, C).

        Returns:
            (R, llm_width)
        """
        empty = (masks.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f'region(s) {empty} of the batch have an empty mask')
        grid = self.mask_stem(torch.cat([images, masks[:, None].to(images.dtype)], dim=1))
        r, c, g, _ = grid.shape
        out = []
        for i in range(r):
            points = self.sample_points(masks[i] > 0)[None, None].to(grid.dtype)  # 1,1,P,2
            per_level = []
            for feats in levels[-self.num_levels:]:
                fused = grid[i:i + 1] + feats[i].transpose(0, 1).reshape(1, c, g, g).to(grid.dtype)
                sampled = F.grid_sample(fused, points, align_corners=False)  # 1, C, 1, P
                per_level.append(self.proj(sampled.mean(dim=(2, 3))[0]))
            out.append(torch.stack(per_level).mean(0))
        return torch.stack(out)
