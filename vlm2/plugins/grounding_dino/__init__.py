"""Perception: open-vocabulary detection, instance segmentation and grounding through the
super link (Grounding DINO on mmdet)."""
import mmdet.datasets.transforms  # noqa: F401  registers mmdet's transforms (mmdet.* in configs)
import mmdet.models  # noqa: F401  registers mmdet's modules, losses and match costs

from .adapters import (CocoInstancesDataset, CrowdHumanDataset, InteractiveSegDataset,
                       RefCocoDataset)
from .decoder import GroundingDINODecoder
from .metrics import (InteractiveSegMetric, PhraseCocoMetric, PhraseCrowdHumanMetric, RECMetric,
                      RESMetric)
from .transforms import FlipPhrases, PackDecoderInputs, PhraseSlots, ReferringPrompt

__all__ = ['CocoInstancesDataset', 'CrowdHumanDataset', 'InteractiveSegDataset',
           'RefCocoDataset', 'GroundingDINODecoder', 'InteractiveSegMetric', 'PhraseCocoMetric',
           'PhraseCrowdHumanMetric', 'RECMetric', 'RESMetric', 'FlipPhrases',
           'PackDecoderInputs', 'PhraseSlots', 'ReferringPrompt']
