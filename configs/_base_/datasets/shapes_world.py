# ShapesWorld (tools/data/make_shapes_world.py), read through the plugins' adapters.
data_root = 'data/shapes_world/'
tile_size = 128
max_tiles = 1

image_pipeline = [
    dict(type='LoadImageIfAny'),
    dict(type='DynamicTiles', tile_size=tile_size, max_tiles=max_tiles),
]
vqa_pipeline = image_pipeline + [
    dict(type='PackVLMInputs', fields=('gt_answers', 'question_type')),
]
vqa_train = dict(type='VQADataset', task='vqa', data_root=data_root,
                 ann_file='annotations/llava_train.json', data_prefix=dict(img_path='images/'),
                 pipeline=vqa_pipeline)
vqa_val = dict(type='VQADataset', task='vqa', data_root=data_root,
               ann_file='annotations/llava_val.json', data_prefix=dict(img_path='images/'),
               pipeline=vqa_pipeline, test_mode=True)

train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='TaskBatchSampler'),
    dataset=dict(type='MixedDataset', datasets=[vqa_train], ratios=[1.0]))
val_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='MixedDataset', datasets=[vqa_val]))
test_dataloader = val_dataloader
val_evaluator = [dict(type='VQAMetric', tasks='vqa')]
test_evaluator = val_evaluator
