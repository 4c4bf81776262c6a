"""Region understanding with visual prompts: a text plugin (no decoder) over the core's
region encoder."""
from .adapters import (RefRegionCaptionDataset, RegionRecognitionDataset, VCRDataset,
                       VGRegionCaptionDataset)
from .metrics import RegionCaptionMetric, RegionRecognitionMetric, VCRMetric

__all__ = ['RegionRecognitionDataset', 'RefRegionCaptionDataset', 'VGRegionCaptionDataset',
           'VCRDataset', 'RegionRecognitionMetric', 'RegionCaptionMetric', 'VCRMetric']
