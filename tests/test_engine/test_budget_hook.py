"""BudgetHook: the learning rate follows the spent budget, and training stops when it is spent."""
from types import SimpleNamespace

import pytest
import torch

from vlm2.engine import BudgetHook


def fake_runner(lr: float = 1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return SimpleNamespace(optim_wrapper=SimpleNamespace(optimizer=opt), iter=0,
                           train_loop=SimpleNamespace(stop_training=False))


def test_needs_exactly_one_budget():
    with pytest.raises(ValueError, match='exactly one'):
        BudgetHook()
    with pytest.raises(ValueError, match='exactly one'):
        BudgetHook(budget_s=1.0, max_iters=10)


def test_learning_rate_warms_up_then_decays_to_eta_min():
    hook = BudgetHook(max_iters=100, warmup=0.1, eta_min=0.05)
    assert hook.lr_factor(0.0) == pytest.approx(0.01)
    assert hook.lr_factor(0.1) == pytest.approx(1.0)
    assert hook.lr_factor(0.55) == pytest.approx(0.05 + 0.95 * 0.5)
    assert hook.lr_factor(1.0) == pytest.approx(0.05) == hook.lr_factor(2.0)


def test_iteration_budget_sets_lr_records_the_curve_and_stops():
    hook, runner = BudgetHook(max_iters=4, warmup=0.0, eta_min=0.0, log_every=2), fake_runner(2.0)
    hook.before_train(runner)
    for i in range(4):
        runner.iter = i
        hook.before_train_iter(runner, i)
        group = runner.optim_wrapper.optimizer.param_groups[0]
        assert group['lr'] == pytest.approx(2.0 * hook.lr_factor(i / 4))
        hook.after_train_iter(runner, i, outputs=dict(loss=torch.tensor(1.5 - i)))
        assert runner.train_loop.stop_training == (i == 3)
    assert [p['iter'] for p in hook.curve] == [2, 4]
    assert hook.curve[-1]['loss'] == -1.5


def test_time_budget_stops_training():
    hook, runner = BudgetHook(budget_s=0.0), fake_runner()
    hook.before_train(runner)
    hook.after_train_iter(runner, 0, outputs={})
    assert runner.train_loop.stop_training and hook.curve[0]['iter'] == 1


def test_stop_only_leaves_the_learning_rate_to_the_config():
    hook, runner = BudgetHook(max_iters=2, schedule_lr=False), fake_runner(0.5)
    hook.before_train(runner)
    for i in range(2):
        runner.iter = i
        hook.before_train_iter(runner, i)
        assert runner.optim_wrapper.optimizer.param_groups[0]['lr'] == 0.5
        hook.after_train_iter(runner, i, outputs={})
    assert runner.train_loop.stop_training


def evaluating_runner(clock: list, eval_s: float = 0.0):
    """A fake runner whose validation loop puts the model in eval mode and takes ``eval_s``
    seconds of the fake clock."""
    runner, calls = fake_runner(), []
    runner.model = torch.nn.Linear(1, 1)

    def run():
        runner.model.eval()
        calls.append(1)
        clock[0] += eval_s
        return {'rec/P@0.5': 0.1 * len(calls)}
    runner.val_loop = SimpleNamespace(run=run)
    return runner, calls


def test_periodic_evaluation_records_metric_curve_and_restores_training_mode():
    hook = BudgetHook(max_iters=8, eval_every=0.25, log_every=100)
    runner, calls = evaluating_runner([0.0])
    hook.before_train(runner)
    for i in range(8):
        runner.iter = i
        hook.before_train_iter(runner, i)
        hook.after_train_iter(runner, i, outputs={})
        assert runner.model.training
    # at 2/8, 4/8 and 6/8 of the budget; not at the end, which the benchmark evaluates itself
    assert [e['iter'] for e in hook.evals] == [3, 5, 7]
    assert [e['rec/P@0.5'] for e in hook.evals] == pytest.approx([0.1, 0.2, 0.3])
    assert runner.train_loop.stop_training


def test_evaluation_time_is_not_spent_from_the_training_budget(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr('vlm2.engine.budget_hook.time.perf_counter', lambda: clock[0])
    hook = BudgetHook(budget_s=10.0, eval_every=0.5)
    runner, calls = evaluating_runner(clock, eval_s=100.0)
    hook.before_train(runner)
    for i in range(20):  # one second per iteration
        runner.iter = i
        clock[0] += 1.0
        hook.after_train_iter(runner, i, outputs={})
        if runner.train_loop.stop_training:
            break
    assert len(calls) == 1 and hook.evals[0]['iter'] == 5
    assert runner.iter + 1 == 10 and hook.elapsed == pytest.approx(10.0)


def test_eval_every_must_be_a_fraction():
    with pytest.raises(ValueError, match='eval_every'):
        BudgetHook(max_iters=4, eval_every=2)
