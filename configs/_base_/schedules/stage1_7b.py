# Paper Table A13, stage 1b (instruction tuning): AdamW lr 2.5e-5, weight decay 0, cosine with
# 3% warm-up, bf16, 1 epoch, global batch 1024 (= batch_size 4 x 32 GPUs x 8 accumulations).
max_epochs = 1
warmup_ratio = 0.03
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16', accumulative_counts=8,
    optimizer=dict(type='AdamW', lr=2.5e-5, weight_decay=0.0, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0,
         end=warmup_ratio * max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_ratio * max_epochs,
         end=max_epochs, convert_to_iter_based=True),
]
