"""An auxiliary loss that teaches a from-scratch LLM to carry a visual prompt to its answer."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlm2.registry import MODELS


@MODELS.register_module()
class RegionPhraseLoss(nn.Module):
    """InfoNCE between a routed phrase that names a region and that region's embedding.

    In "Please segment <reg>region1<region></reg>." → "region1[SEG][EMB]...", the decoder
    reads the ``[EMB]`` states of ``region1[SEG]``, so the LLM has to copy what the prompt's
    ``<region>`` holds to them. The paper's pretrained LLM can; the tiny one, built from
    scratch, did not learn it from the decoder's loss alone (regions README: the phrase
    embeddings of different regions were nearly equal, and the masks did not depend on the
    prompt). This term asks the mean ``[EMB]`` state of each such phrase to pick out its own
    region among all regions of the batch (cosine logits over ``temperature``), a direct
    signal for the copy. Not part of the paper; off unless a config sets
    ``model.region_phrase_loss``.

    Args:
        hidden_size: the LLM width (filled in by :class:`VisionLLMv2`).
        weight: the term's weight in the total loss.
        temperature: of the cosine logits.
    """

    def __init__(self, hidden_size: int, weight: float = 1.0, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'model.region_phrase_loss.temperature must be > 0, got {temperature}')
        self.weight = weight
        self.temperature = temperature
        self.proj = nn.Linear(hidden_size, hidden_size)

    @staticmethod
    def pairs(phrases: list[list[tuple[str, Tensor, int]]], phrase_names: list[list[str]],
              regions: list[dict[str, int]]) -> tuple[list[Tensor], list[int]]:
        """The query states of each phrase that names a region, and that region's row
        (``regions``: per sample, name → row, from :meth:`VisionLLMv2._named_regions`)."""
        states, targets = [], []
        for found, names, named in zip(phrases, phrase_names, regions):
            for (_, query_states, _), name in zip(found, names):
                if name in named:
                    states.append(query_states.mean(0))
                    targets.append(named[name])
        return states, targets

    def forward(self, states: list[Tensor], regions: Tensor,
                targets: list[int]) -> Optional[Tensor]:
        """The weighted InfoNCE, or None when no phrase names a region."""
        if not states:
            return None
        query = F.normalize(self.proj(torch.stack(states)).float(), dim=-1)
        keys = F.normalize(regions.float(), dim=-1)
        logits = query @ keys.T / self.temperature
        target = torch.tensor(targets, device=logits.device)
        return self.weight * F.cross_entropy(logits, target)
