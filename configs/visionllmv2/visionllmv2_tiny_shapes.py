# The embedded default: the tiny generalist trained on ShapesWorld on a CPU (make demo).
_base_ = [
    '../_base_/models/visionllmv2_tiny.py',
    '../_base_/datasets/shapes_world.py',
    '../_base_/schedules/iter_tiny.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['vlm2.plugins.chat'], allow_failed_imports=False)
# The tower starts from dense pretraining on ShapesWorld instances (make demo runs
# visionllmv2_tiny_tower_pretrain.py first): trained from scratch by the LM loss alone it read
# position and count from the picture but hardly colour (README, quick start).
model = dict(vision_tower=dict(init_cfg=dict(
    type='Pretrained', checkpoint='work_dirs/visionllmv2_tiny_tower_pretrain/iter_300.pth')))
