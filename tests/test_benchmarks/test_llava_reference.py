"""The reference model of the throughput and latency benchmarks."""
import os
import sys

import torch

from conftest import BENCHMARKS, ROOT

sys.path.insert(0, BENCHMARKS)
from llava_reference import CONFIG, build_pair  # noqa: E402


def test_llava_reference_holds_the_demo_models_weights_and_kernels():
    ours, llava = build_pair(os.path.join(ROOT, CONFIG))
    assert ours.vision_tower.feature_cache == 0  # Llava runs its tower every batch
    assert (llava.config.text_config._attn_implementation ==
            ours.llm.config._attn_implementation)
    assert (llava.config.vision_config._attn_implementation ==
            ours.vision_tower.model.config._attn_implementation)
    ids = torch.randint(0, ours.llm.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(llava(input_ids=ids).logits, ours.llm(input_ids=ids).logits)
