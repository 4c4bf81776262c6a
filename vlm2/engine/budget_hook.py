"""Training on a wall-clock budget, for the benchmark scripts.

mmengine's schedulers count iterations or epochs; a benchmark on a shared CPU has minutes.
This hook sets the learning rate from the spent fraction of the budget instead, with the
recipes' shape (linear warm-up, then cosine), and stops training when the budget is spent.
"""
import math
import time
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log

from vlm2.registry import HOOKS


@HOOKS.register_module()
class BudgetHook(Hook):
    """Stops training after ``budget_s`` seconds or ``max_iters`` iterations and sets the
    learning rate from the spent fraction: linear warm-up over ``warmup`` of it, then cosine
    to ``eta_min`` times the base rate. With ``schedule_lr=False`` it only stops, and the
    config's own ``param_scheduler`` keeps the learning rate.

    Records the training wall time in ``elapsed`` and, every ``log_every`` iterations, a
    learning-curve point (iteration, seconds, losses) in ``curve``. With ``eval_every`` (a
    fraction of the budget, e.g. 0.25) it also runs the runner's validation loop each time
    that much more of the budget is spent, before the end, and appends (iteration, seconds,
    metrics) to ``evals``: a learning curve of the metrics themselves. The clock stops while
    it evaluates, so the training budget is the same with or without it.
    """
    priority = 'VERY_HIGH'

    def __init__(self, budget_s: Optional[float] = None, max_iters: Optional[int] = None,
                 warmup: float = 0.03, eta_min: float = 0.01, log_every: int = 10,
                 schedule_lr: bool = True, eval_every: Optional[float] = None) -> None:
        if (budget_s is None) == (max_iters is None):
            raise ValueError('BudgetHook needs exactly one of budget_s and max_iters')
        if eval_every is not None and not 0 < eval_every < 1:
            raise ValueError(f'BudgetHook eval_every={eval_every}: a fraction of the budget '
                             'in (0, 1) was expected')
        self.budget_s = budget_s
        self.max_iters = max_iters
        self.warmup = warmup
        self.eta_min = eta_min
        self.log_every = log_every
        self.schedule_lr = schedule_lr
        self.eval_every = eval_every
        self.next_eval = eval_every
        self.evals: list[dict] = []
        self.start = None
        self.elapsed = 0.0
        self.curve: list[dict] = []

    def before_train(self, runner) -> None:
        self.base = [[g['lr'] for g in opt.param_groups]
                     for opt in self._optimizers(runner)]
        self.start = time.perf_counter()

    @staticmethod
    def _optimizers(runner):
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if hasattr(wrapper, 'optim_wrappers') else [wrapper]
        return [w.optimizer for w in wrappers]

    def spent(self, runner) -> float:
        """The spent fraction of the budget (time or iterations), once training started."""
        if self.budget_s is not None:
            return (time.perf_counter() - self.start) / self.budget_s
        return runner.iter / self.max_iters

    def lr_factor(self, frac: float) -> float:
        """The learning-rate multiplier at a spent fraction ``frac`` of the budget."""
        frac = min(frac, 1.0)
        if frac < self.warmup:
            return 0.01 + 0.99 * frac / self.warmup
        t = (frac - self.warmup) / (1 - self.warmup)
        return self.eta_min + (1 - self.eta_min) * 0.5 * (1 + math.cos(math.pi * t))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if not self.schedule_lr:
            return
        factor = self.lr_factor(self.spent(runner))
        for opt, base in zip(self._optimizers(runner), self.base):
            for group, lr in zip(opt.param_groups, base):
                group['lr'] = lr * factor

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.elapsed = time.perf_counter() - self.start
        done = (self.budget_s is not None and self.elapsed >= self.budget_s
                or self.max_iters is not None and runner.iter + 1 >= self.max_iters)
        if (runner.iter + 1) % self.log_every == 0 or done:
            self.curve.append(dict(iter=runner.iter + 1, seconds=round(self.elapsed, 1),
                                   **{k: round(v.item() if hasattr(v, 'item') else float(v), 4)
                                      for k, v in (outputs or {}).items()}))
        if not done and self.next_eval is not None:
            spent = self.spent(runner)
            if spent >= self.next_eval:
                self._evaluate(runner, spent)
        if done:
            if self.budget_s is not None:
                print_log(f'BudgetHook: {self.budget_s:.0f} s spent at iteration '
                          f'{runner.iter + 1}; stopping', logger='current')
            runner.train_loop.stop_training = True

    def _evaluate(self, runner, spent: float) -> None:
        """One pass of the validation loop in the middle of training, off the clock."""
        paused = time.perf_counter()
        while self.next_eval <= spent:
            self.next_eval += self.eval_every
        metrics = runner.val_loop.run()
        self.evals.append(dict(iter=runner.iter + 1, seconds=round(self.elapsed, 1),
                               fraction=round(spent, 3),
                               **{k: round(float(v), 4) for k, v in metrics.items()}))
        runner.model.train()
        self.start += time.perf_counter() - paused
