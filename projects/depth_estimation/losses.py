"""Depth losses on the log-depth difference ``d = log(pred) - log(gt)``."""
import torch
import torch.nn.functional as F
from torch import Tensor


def silog_loss(diff: Tensor, valid: Tensor, lam: float = 0.85) -> Tensor:
    """Scale-invariant log loss (Eigen et al., 2014), ``sqrt(mean d² - λ mean(d)²)``.

    ``λ=1`` is fully scale-invariant; ``λ<1`` (0.85, as BTS and AdaBins) keeps part of the
    absolute scale, which metric depth needs. Written here because mmseg/mmdet ship no depth
    loss and the formula is two lines.
    """
    d = diff[valid]
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2 + 1e-8)


def gradient_matching_loss(diff: Tensor, valid: Tensor, scales: int = 4) -> Tensor:
    """Multi-scale gradient matching (Li & Snavely 2018, MiDaS): mean |∇d| over valid
    neighbouring pixels at ``scales`` halvings, so edges land where the target's are."""
    total = diff.new_zeros(())
    d, m = diff[None, None], valid[None, None].float()
    for s in range(scales):
        if s:
            d = F.avg_pool2d(d * m, 2) / F.avg_pool2d(m, 2).clamp(min=1e-6)
            m = (F.avg_pool2d(m, 2) > 0.99).float()
        d2, m2 = d[0, 0], m[0, 0]
        if min(d2.shape) < 2:
            break
        mx, my = m2[:, 1:] * m2[:, :-1], m2[1:] * m2[:-1]
        gx = (d2[:, 1:] - d2[:, :-1]).abs() * mx
        gy = (d2[1:] - d2[:-1]).abs() * my
        total = total + (gx.sum() + gy.sum()) / (mx.sum() + my.sum()).clamp(min=1)
    return total / scales
