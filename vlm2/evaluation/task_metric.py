"""Generic evaluation plumbing: a metric sees only the samples of its task families."""
from abc import abstractmethod
from typing import Optional, Sequence, Union

from mmengine.evaluator import BaseMetric


class TaskMetric(BaseMetric):
    """A metric that evaluates the predictions of some task families and ignores the rest.

    A validation set may mix families (VQA and detection, say); each plugin's metric names
    its families in ``tasks`` and implements :meth:`process_sample`.

    Args:
        tasks: the task families this metric scores.
    """

    def __init__(self, tasks: Union[str, Sequence[str]], collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample.get('task') in self.tasks:
                self.results.append(self.process_sample(sample))

    @abstractmethod
    def process_sample(self, sample: dict) -> dict:
        """What to keep of one prediction (a dict of the data sample's fields)."""
