"""TaskMixHook: each phase's weights decide which task family a step's batch comes from."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.dataset import InfiniteSampler
from torch.utils.data import BatchSampler

from vlm2.datasets import TaskBatchSampler
from vlm2.engine import BudgetHook, TaskMixHook


class TwoTasks:
    """Indices 0-19 are family 'a', 20-39 family 'b'."""

    def __len__(self) -> int:
        return 40

    def get_task(self, idx: int) -> str:
        return 'a' if idx < 20 else 'b'


def runner_with(batch_sampler, hooks):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return SimpleNamespace(train_dataloader=SimpleNamespace(batch_sampler=batch_sampler),
                           hooks=hooks, iter=0, max_iters=10,
                           optim_wrapper=SimpleNamespace(optimizer=opt),
                           train_loop=SimpleNamespace(stop_training=False))


def test_phases_set_the_family_of_each_step_and_count_steps():
    data = TwoTasks()
    sampler = TaskBatchSampler(InfiniteSampler(data, seed=0), batch_size=2)
    budget = BudgetHook(max_iters=10)
    mix = TaskMixHook([dict(start=0, weights=dict(a=1)),
                       dict(start=0.5, weights=dict(a=0, b=1))])
    runner = runner_with(sampler, [budget, mix])
    budget.before_train(runner)
    mix.before_train(runner)
    batches, families = iter(sampler), []
    for i in range(10):
        runner.iter = i
        mix.before_train_iter(runner, i)
        family = data.get_task(next(batches)[0])
        families.append(family)
        mix.after_train_iter(runner, i, data_batch=dict(
            data_samples=[SimpleNamespace(task=family)]))
    assert families == ['a'] * 5 + ['b'] * 5
    assert mix.steps == dict(a=5, b=5) and mix.current == 1
    assert list(sampler.probs) == [0.0, 1.0]


def test_without_a_budget_hook_the_fraction_is_of_max_iters():
    data = TwoTasks()
    sampler = TaskBatchSampler(InfiniteSampler(data, seed=0), batch_size=2)
    mix = TaskMixHook([dict(start=0, weights=dict(a=3, b=1)), dict(start=0.8, weights=dict(b=1))])
    runner = runner_with(sampler, [mix])
    mix.before_train(runner)
    assert list(sampler.probs) == [0.75, 0.25]
    runner.iter = 8
    mix.before_train_iter(runner, 8)
    assert list(sampler.probs) == [0.0, 1.0]


def test_bad_phases_and_loaders_fail_clearly():
    with pytest.raises(ValueError, match='start=0'):
        TaskMixHook([dict(start=0.2, weights=dict(a=1))])
    with pytest.raises(ValueError, match='rise'):
        TaskMixHook([dict(start=0, weights=dict(a=1)), dict(start=1.0, weights=dict(a=1))])
    with pytest.raises(ValueError, match='positive sum'):
        TaskMixHook([dict(start=0, weights=dict(a=0))])
    data = TwoTasks()
    unknown = TaskMixHook([dict(start=0, weights=dict(a=1, c=1))])
    with pytest.raises(ValueError, match=r"\['c'\]"):
        unknown.before_train(runner_with(
            TaskBatchSampler(InfiniteSampler(data, seed=0), batch_size=2), [unknown]))
    mix = TaskMixHook([dict(start=0, weights=dict(a=1))])
    with pytest.raises(TypeError, match='TaskBatchSampler'):
        mix.before_train(runner_with(BatchSampler(range(4), 2, False), [mix]))
