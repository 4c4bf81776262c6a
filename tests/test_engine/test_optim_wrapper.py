"""The bf16 autocast wrapper, and its float32 fallback on CPUs without native bf16."""
import pytest
import torch

from vlm2.engine import optim_wrapper as ow


@pytest.mark.parametrize('fast, fallback, dtype', [
    (True, True, torch.bfloat16), (False, True, torch.float32), (False, False, torch.bfloat16)])
def test_autocast_on_cpu_follows_native_bf16_support(monkeypatch, fast, fallback, dtype):
    logged = []
    monkeypatch.setattr(ow, 'cpu_has_fast_bf16', lambda: fast)
    monkeypatch.setattr(ow, 'print_log', lambda msg, **kw: logged.append(msg))
    model = torch.nn.Linear(4, 4)
    wrapper = ow.BF16AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                          cpu_fallback=fallback)
    for _ in range(2):
        with wrapper.optim_context(model):
            assert model(torch.randn(2, 4)).dtype == dtype
    # the fallback is said once, and only when it happens
    assert len(logged) == (1 if dtype == torch.float32 else 0)
    if logged:
        assert 'training in float32' in logged[0]


def test_other_dtypes_are_refused_naming_the_key():
    model = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match='optim_wrapper.dtype'):
        ow.BF16AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                    dtype='float16')
