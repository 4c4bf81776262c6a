from .base_decoder import BaseTaskDecoder
from .data_preprocessor import VLMDataPreprocessor
from .projector import MLPProjector
from .region_encoder import RegionEncoder
from .region_phrase_loss import RegionPhraseLoss
from .super_link import SuperLink
from .tokenizers import PretrainedTokenizer, ShapesWorldTokenizer, WordLevelTokenizer
from .tower_pretrainer import TowerPretrainer
from .vision_tower import VisionTower
from .visionllm_v2 import VisionLLMv2

__all__ = ['BaseTaskDecoder', 'VLMDataPreprocessor', 'MLPProjector', 'RegionEncoder', 'SuperLink',
           'PretrainedTokenizer', 'ShapesWorldTokenizer', 'WordLevelTokenizer', 'TowerPretrainer',
           'VisionTower', 'VisionLLMv2']
