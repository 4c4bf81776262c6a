# The embedded default: the tiny generalist trained on ShapesWorld on a CPU (make demo).
_base_ = [
    '../_base_/models/visionllmv2_tiny.py',
    '../_base_/datasets/shapes_world.py',
    '../_base_/schedules/iter_tiny.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['vlm2.plugins.chat'], allow_failed_imports=False)
# The tower starts from dense pretraining on ShapesWorld instances (make demo runs
# visionllmv2_tiny_tower_pretrain.py first) and stays frozen, as the paper's CLIP does. Trained
# by the LM loss alone, from scratch or from that tower, it never let the LLM answer existence
# questions above chance; pretrained and frozen, existence reached 0.730 (README, quick start).
model = dict(vision_tower=dict(frozen=True, init_cfg=dict(
    type='Pretrained', checkpoint='work_dirs/visionllmv2_tiny_tower_pretrain/iter_800.pth')))
