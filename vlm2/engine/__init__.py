from .budget_hook import BudgetHook
from .optim_wrapper import BF16AutocastOptimWrapper
from .task_mix_hook import TaskMixHook
from .visualization_hook import PredictionPictureHook

__all__ = ['BF16AutocastOptimWrapper', 'BudgetHook', 'PredictionPictureHook',
           'TaskMixHook']
