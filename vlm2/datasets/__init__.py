from .base_dataset import VLMBaseDataset
from .chat_template import TEMPLATES, ChatTemplate, get_template
from .conversation import ConversationEncoder
from .instance_attribute_dataset import InstanceAttributeDataset
from .llava_dataset import LLaVADataset, load_json_records
from .mixed_dataset import MixedDataset
from .task_batch_sampler import TaskBatchSampler
from .transforms import (DynamicTiles, LoadImageIfAny, PackInstanceLabelMaps, PackVLMInputs,
                         VisualPromptMasks, segmentation_to_mask)
from .visual_prompts import PROMPT_KINDS, box_prompt, random_prompt, sample_prompt

__all__ = ['VLMBaseDataset', 'TEMPLATES', 'ChatTemplate', 'get_template',
           'ConversationEncoder', 'InstanceAttributeDataset', 'LLaVADataset', 'load_json_records',
           'MixedDataset', 'TaskBatchSampler', 'DynamicTiles', 'LoadImageIfAny',
           'PackInstanceLabelMaps', 'PackVLMInputs', 'VisualPromptMasks', 'segmentation_to_mask',
           'PROMPT_KINDS', 'box_prompt', 'random_prompt', 'sample_prompt']
