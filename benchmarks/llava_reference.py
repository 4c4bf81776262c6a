"""transformers' LlavaForConditionalGeneration with the tiny VisionLLMv2's sizes and weights.

Shared by the benchmarks: both models hold identical weights, so their losses and greedy
tokens must agree, and the timings compare like with like.
"""
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from transformers import LlavaConfig, LlavaForConditionalGeneration

from vlm2.registry import MODELS

CONFIG = 'configs/visionllmv2/visionllmv2_tiny_shapes.py'


def build_pair(config: str = CONFIG):
    """(VisionLLMv2, LlavaForConditionalGeneration), same sizes and weights, eval mode."""
    init_default_scope('vlm2')
    torch.manual_seed(0)
    cfg = Config.fromfile(config)
    # transformers' Llava has no pixel shuffle: both models see every patch as a token
    cfg.model.vision_tower.pixel_shuffle = 1
    # nor a convolutional stem: both patchify with CLIP's own convolution
    cfg.model.vision_tower.conv_stem = None
    # Llava runs its tower on every batch: ours must too, or repeated batches time the cache
    cfg.model.vision_tower.feature_cache = 0
    ours = MODELS.build(cfg.model).eval()
    ours.cfg = cfg
    tower = ours.vision_tower.model.config
    llm = ours.llm.config
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=tower.to_dict(), text_config=llm.to_dict(),
        image_token_id=ours.encoder.image_id, vision_feature_layer=ours.vision_tower.select_layer,
        vision_feature_select_strategy='default', projector_hidden_act='gelu',
        tie_word_embeddings=llm.tie_word_embeddings)).eval()
    # the same attention kernels as ours (a config's to_dict leaves the implementation out)
    llava.set_attn_implementation(dict(text_config=llm._attn_implementation,
                                       vision_config=tower._attn_implementation))
    state = {}
    for k, v in ours.state_dict().items():
        if k.startswith('llm.model.'):
            state['model.language_model.' + k[len('llm.model.'):]] = v
        elif k.startswith('llm.lm_head.'):
            state['lm_head.' + k[len('llm.lm_head.'):]] = v
        elif k.startswith('vision_tower.model.'):
            state['model.vision_tower.' + k[len('vision_tower.model.'):]] = v
        elif k.startswith('projector.'):
            idx, rest = k[len('projector.'):].split('.', 1)
            state[f'model.multi_modal_projector.linear_{int(idx) // 2 + 1}.{rest}'] = v
    missing, unexpected = llava.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == 'lm_head.weight' and llm.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f'weight mapping failed: missing {missing}, unexpected {unexpected}')
    return ours, llava
