"""A wall-clock budget for benchmark training runs."""
import time

from mmengine.hooks import Hook
from mmengine.logging import print_log

from vlm2.registry import HOOKS


@HOOKS.register_module()
class TrainTimeLimitHook(Hook):
    """Ends training once ``max_seconds`` have passed: the current iteration becomes the
    last, so the loop's final validation and the checkpoint hook's last save still run (it
    runs after this hook). Keeps the benchmark's 10-minute budget on a slower machine; logs
    when it cuts the run short."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.start = None

    def before_train(self, runner) -> None:
        self.start = time.time()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        loop = runner.train_loop
        if time.time() - self.start > self.max_seconds and loop.max_iters > runner.iter + 1:
            print_log(f'TrainTimeLimitHook: {self.max_seconds:.0f} s reached, training ends '
                      f'at iteration {runner.iter + 1} of {loop.max_iters}', logger='current')
            loop._max_iters = runner.iter + 1
