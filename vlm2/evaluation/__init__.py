from .task_metric import TaskMetric

__all__ = ['TaskMetric']
