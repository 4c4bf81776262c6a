# The tiny generalist with visual prompts: VQA plus region recognition and region captioning
# on ShapesWorld, with the region encoder (prompt kinds drawn uniformly in training).
_base_ = ['../../../../configs/visionllmv2/visionllmv2_tiny_shapes.py']
custom_imports = dict(imports=['vlm2.plugins.chat', 'vlm2.plugins.regions'],
                      allow_failed_imports=False)

# Measured (README) with the tower trained from scratch inside the recipe (so not frozen);
# the demo's pretrained tower (configs/visionllmv2/visionllmv2_tiny_tower_pretrain.py) is not
# used here.
model = dict(vision_tower=dict(init_cfg=None, frozen=False),
             region_encoder=dict(num_levels=3, max_points=2304))

data_root = 'data/shapes_world/'
fields = ('region_masks', 'prompt_kinds', 'gt_answers', 'gt_captions')


def region_pipeline(kind=None):
    return [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=128, max_tiles=1),
            dict(type='VisualPromptMasks', tile_size=128, kind=kind),
            dict(type='PackVLMInputs', fields=fields)]


recognition = dict(type='RegionRecognitionDataset', data_root=data_root,
                   ann_file='annotations/instances_train.json',
                   data_prefix=dict(img_path='images/train/'), pipeline=region_pipeline())
captions = dict(type='RefRegionCaptionDataset', data_root=data_root,
                ann_file='annotations/refs_train.json',
                instances_file='annotations/instances_train.json',
                data_prefix=dict(img_path='images/train/'), pipeline=region_pipeline())
train_dataloader = dict(dataset=dict(
    datasets=[{{_base_.vqa_train}}, recognition, captions], ratios=[2, 1, 1]))

val_sets = [{{_base_.vqa_val}}] + [
    dict(type='RegionRecognitionDataset', data_root=data_root,
         ann_file='annotations/instances_val.json', data_prefix=dict(img_path='images/val/'),
         pipeline=region_pipeline(kind), test_mode=True, task=f'region')
    for kind in ('point', 'box', 'mask')]
val_dataloader = dict(dataset=dict(datasets=val_sets))
test_dataloader = val_dataloader
val_evaluator = [dict(type='VQAMetric', tasks='vqa'),
                 dict(type='RegionRecognitionMetric', tasks='region')]
test_evaluator = val_evaluator
