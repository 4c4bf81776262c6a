# Dense pretraining of the tiny recipe's vision tower on ShapesWorld instances, the stand-in for
# the paper's pretrained CLIP; `make demo` runs it once before the MLLM, and the demo
# (visionllmv2_tiny_shapes.py) and the visual-prompt recipe start from its checkpoint. Each 8-px
# patch learns the shape and the colour of the instance covering it (TowerPretrainer). Held-out
# foreground patches, batch 16: shape 0.945 / 0.936 / 0.917 after 1,200 / 1,000 / 800
# iterations (colour 0.988-0.989); batch 32: 0.936 / 0.990 after 800 (7 min), 0.562 / 0.984
# after 300. Only strong towers let the LLM read which shapes are in the image; the demo
# reached VQA 0.465 / 0.450 / 0.428 from the batch-16 towers (README). 1,000 iterations take
# 4-4.5 minutes on 2 cores.
_base_ = [
    '../_base_/models/visionllmv2_tiny.py',
    '../_base_/schedules/iter_tiny.py',
    '../_base_/default_runtime.py',
]
model = dict(_delete_=True, type='TowerPretrainer',
             vision_tower={{_base_.model.vision_tower}},
             num_classes=dict(category_id=6, color=7))  # 5 shapes / 6 colours + background

data_root = 'data/shapes_world/'
attributes = dict(category_id=None,
                  color=['red', 'green', 'blue', 'yellow', 'purple', 'orange'])
pipeline = [
    dict(type='LoadImageIfAny'),
    dict(type='DynamicTiles', tile_size={{_base_.image_size}}, max_tiles=1),
    dict(type='PackInstanceLabelMaps'),
]
instances = dict(type='InstanceAttributeDataset', data_root=data_root, attributes=attributes,
                 pipeline=pipeline)
train_dataloader = dict(
    batch_size=16, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(instances, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img_path='images/train/')))
val_dataloader = dict(
    batch_size=50, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(instances, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img_path='images/val/'), test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type='PatchAccuracy')
test_evaluator = val_evaluator

max_iters = 1000  # the recipes that start from it name iter_1000.pth: change them together
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=15),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=15, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
