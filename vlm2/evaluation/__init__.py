from .patch_accuracy import PatchAccuracy
from .task_metric import TaskMetric

__all__ = ['PatchAccuracy', 'TaskMetric']
