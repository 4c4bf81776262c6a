# The tiny ShapesWorld recipe plus [DEPTH]: monocular depth on the synthetic depth shapes
# (python projects/depth_estimation/synthetic.py --out data/depth_shapes).
_base_ = ['../../../configs/visionllmv2/visionllmv2_tiny_shapes.py']
custom_imports = dict(imports=['vlm2.plugins.chat', 'projects.depth_estimation'],
                      allow_failed_imports=False)

# Measured (README) with the tower trained from scratch inside the recipe (so not frozen);
# the demo's pretrained tower (configs/visionllmv2/visionllmv2_tiny_tower_pretrain.py) is not
# used here.
model = dict(
    vision_tower=dict(init_cfg=None, frozen=False),
    tokenizer=dict(extra_words=['estimate', 'depth', 'map', 'predict', 'scene', 'pixel']),
    super_link=dict(decoders=dict(depth=dict(type='DepthDecoder', num_queries=4,
                                             image_size=128, max_depth=10.0))))

depth_root = 'data/depth_shapes/'
# the base's image_pipeline (a {{_base_}} reference cannot be concatenated in a config)
image_pipeline = [dict(type='LoadImageIfAny'),
                  dict(type='DynamicTiles', tile_size=128, max_tiles=1)]
depth_pipeline = image_pipeline + [
    dict(type='LoadDepthInputs', size=128),
    dict(type='PackVLMInputs', fields=('depth_image', 'gt_depth'))]
depth_train = dict(type='NYUDepthDataset', task='depth', data_root=depth_root,
                   ann_file='train_list.txt', depth_scale=1000.0,
                   data_prefix=dict(img_path='', depth_path=''), pipeline=depth_pipeline)
depth_val = dict(type='NYUDepthDataset', task='depth', data_root=depth_root,
                 ann_file='val_list.txt', depth_scale=1000.0,
                 data_prefix=dict(img_path='', depth_path=''), pipeline=depth_pipeline,
                 test_mode=True)

train_dataloader = dict(dataset=dict(datasets=[depth_train], ratios=[1.0]))
val_dataloader = dict(dataset=dict(datasets=[depth_val]))
test_dataloader = val_dataloader
val_evaluator = [dict(type='DepthMetric', tasks='depth', max_depth=10.0)]
test_evaluator = val_evaluator
