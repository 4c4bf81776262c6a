# Iteration-based AdamW with 3% linear warm-up and cosine decay (the paper's schedule shape).
max_iters = 1500
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# bf16 autocast (the paper trains in bf16); on a CPU with native bf16 it doubles the tiny
# model's speed. On one without (AVX2 only) it is many times slower, and the wrapper
# trains in float32 instead (cpu_fallback, vlm2/engine/optim_wrapper.py).
optim_wrapper = dict(type='BF16AutocastOptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98)),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=int(0.03 * max_iters)),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=int(0.03 * max_iters), end=max_iters,
         eta_min_ratio=0.01),
]
