"""vlm2's registries: scoped children of MMEngine's roots, as in mmdet and mmpose.

``locations`` make ``build`` import the modules that register into each registry, so a config
with ``default_scope='vlm2'`` needs no explicit imports of the core. Plugins register into the
same registries and are reached through ``custom_imports``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, locations=['vlm2.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['vlm2.datasets'])
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=['vlm2.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=['vlm2.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['vlm2.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, locations=['vlm2.evaluation'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['vlm2.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS)
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS,
                          locations=['vlm2.engine'])
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS)
# Tokenizer builders (functions): a pretrained folder, or a word-level vocabulary built in code.
TOKENIZERS = Registry('tokenizer', locations=['vlm2.models'])
