# The paper's stage 1 (instruction tuning, Table A13): CLIP-L/14-336 (frozen) + Vicuna-7B v1.5
# from local folders, anyres with at most 4 tiles; the projector and the LLM train.
_base_ = [
    '../_base_/models/visionllmv2_7b.py',
    '../_base_/datasets/llava_stage1.py',
    '../_base_/schedules/stage1_7b.py',
    '../_base_/default_runtime.py',
]
model = dict(frozen_modules=['vision_tower'])
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=2000))
