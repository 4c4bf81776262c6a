# The tower pretraining run longer (800 iterations instead of 300), for the visual-prompt
# recipe (vlm2/plugins/regions/configs/visionllmv2_tiny_shapes_regions_seg.py): region
# recognition reads the object's kind from the tower's features inside the region, and this
# tower tells each patch's shape far better than the demo's (README). The demo keeps the
# 300-iteration tower, which fits its 15-minute budget.
_base_ = ['./visionllmv2_tiny_tower_pretrain.py']

max_iters = 800  # the regions recipe names iter_800.pth: change both together
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=15),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=15, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
