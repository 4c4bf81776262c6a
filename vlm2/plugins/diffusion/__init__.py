"""Text-to-image ([GEN]) and instruction editing ([EDIT]) through the super link."""
from .adapters import CaptionImageDataset, InstructEditDataset
from .conditioner import SuperLinkConditioner
from .decoder import DiffusionDecoder
from .gen_decoder import TextToImageDecoder
from .edit_decoder import ImageEditDecoder
from .metrics import CLIPScoreMetric, FIDMetric, ShapesGenerationMetric
from .transforms import LoadDiffusionImages

__all__ = ['CaptionImageDataset', 'InstructEditDataset', 'SuperLinkConditioner',
           'DiffusionDecoder', 'ImageEditDecoder', 'TextToImageDecoder', 'CLIPScoreMetric',
           'FIDMetric', 'ShapesGenerationMetric', 'LoadDiffusionImages']
