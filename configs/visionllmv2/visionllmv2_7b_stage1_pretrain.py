# Stage 1a (pre-training, Table A13): only the projector (and region encoder) trains, lr 1e-3,
# global batch 2048 (= 4 x 32 GPUs x 16 accumulations).
_base_ = ['./visionllmv2_7b_stage1.py']
model = dict(frozen_modules=['vision_tower', 'llm'])
optim_wrapper = dict(accumulative_counts=16, optimizer=dict(lr=1e-3))
