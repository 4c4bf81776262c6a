# Stage-1 data: LLaVA-format conversations (captions, VQA, OCR, region data, ...) with
# anyres tiling: up to 4 tiles of 336 px plus a thumbnail. Add sources to `datasets`, with
# their weights in `ratios`.
data_root = 'data/llava/'
tile_size = 336
max_tiles = 4

image_pipeline = [
    dict(type='LoadImageIfAny'),
    dict(type='DynamicTiles', tile_size=tile_size, max_tiles=max_tiles),
]
train_pipeline = image_pipeline + [dict(type='PackVLMInputs')]

train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='TaskBatchSampler'),
    dataset=dict(type='MixedDataset', ratios=[1.0], datasets=[
        dict(type='LLaVADataset', task='chat', data_root=data_root,
             ann_file='llava_v1_5_mix665k.json', data_prefix=dict(img_path=''),
             pipeline=train_pipeline),
    ]))
