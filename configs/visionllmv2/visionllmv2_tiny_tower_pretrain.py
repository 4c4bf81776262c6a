# Dense pretraining of the tiny recipe's vision tower on ShapesWorld instances; `make demo` runs
# it before the MLLM and visionllmv2_tiny_shapes.py starts from its checkpoint. Each 8-px patch
# learns the shape and the colour of the instance covering it (TowerPretrainer). The paper's
# towers come pretrained; trained from scratch by the LM loss alone, the tiny tower left colour
# answers at chance at seed 1 (README, quick start: "A pretrained tower made the demo read colour").
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
    batch_size=32, num_workers=1, persistent_workers=True,
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

max_iters = 300  # visionllmv2_tiny_shapes.py names iter_300.pth: change both together
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=15),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=15, end=max_iters, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
