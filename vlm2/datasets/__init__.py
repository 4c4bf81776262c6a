from .base_dataset import VLMBaseDataset
from .chat_template import TEMPLATES, ChatTemplate, get_template
from .conversation import ConversationEncoder
from .llava_dataset import LLaVADataset, load_json_records
from .mixed_dataset import MixedDataset
from .task_batch_sampler import TaskBatchSampler
from .transforms import DynamicTiles, LoadImageIfAny, PackVLMInputs

__all__ = ['VLMBaseDataset', 'TEMPLATES', 'ChatTemplate', 'get_template',
           'ConversationEncoder', 'LLaVADataset', 'load_json_records', 'MixedDataset',
           'TaskBatchSampler', 'DynamicTiles', 'LoadImageIfAny', 'PackVLMInputs']
