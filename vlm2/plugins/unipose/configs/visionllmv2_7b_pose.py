# Paper scale (stage 3, Table A13): VisionLLM v2 7B with the UniPose decoder on a Swin-T backbone
# loaded from a local checkpoint; the LLM is frozen, the decoder and super-link queries train.
# Data: COCO, CrowdPose and AP-10K keypoints (the paper adds Human-Art and 7 more sets).
_base_ = ['../../../../configs/_base_/models/visionllmv2_7b.py',
          '../../../../configs/_base_/default_runtime.py']
custom_imports = dict(imports=['vlm2.plugins.chat', 'vlm2.plugins.unipose'],
                      allow_failed_imports=False)

swin_checkpoint = 'checkpoints/swin_tiny_patch4_window7_224.pth'  # a local file, never fetched
pose_decoder = dict(
    type='UniPoseDecoder',
    num_queries=4,
    backbone=dict(type='mmdet.SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
                  num_heads=[3, 6, 12, 24], window_size=7, drop_path_rate=0.2,
                  out_indices=(1, 2, 3), convert_weights=True,
                  init_cfg=dict(type='Pretrained', checkpoint=swin_checkpoint)),
    in_channels=(192, 384, 768),
    embed_dims=256,
    # ED-Pose: 6 encoder layers, 2 box and 4 keypoint decoder layers
    transformer=dict(num_heads=8, num_points=4, ffn_channels=2048, num_encoder_layers=6,
                     num_box_layers=2, num_keypoint_layers=4, num_instances=100),
    max_per_img=100)
model = dict(
    frozen_modules=['vision_tower', 'llm'],
    super_link=dict(decoders=dict(
        pose=pose_decoder,
        # the perception plugin's decoder owns [DET] once configured; until then this table
        class_table=dict(type='ClassPhraseTable', num_queries=4))),
    test_cfg=dict(routing='forced'))

tile_size = 336
pose_scale = 800  # the decoder's own image, long side (paper: short side 480-800)
image_pipeline = [dict(type='LoadImageIfAny'),
                  dict(type='DynamicTiles', tile_size=tile_size, max_tiles=4)]
train_pipeline = image_pipeline + [
    dict(type='PoseTargets', scale=pose_scale, train=True),
    dict(type='PackVLMInputs', fields=('pose_img', 'pose_prompt', 'gt_pose'))]
val_pipeline = image_pipeline + [
    dict(type='PoseTargets', scale=pose_scale, train=False),
    dict(type='PackVLMInputs', fields=('pose_img', 'pose_prompt', 'gt_pose', 'pose_eval'))]


def _set(kind, root, ann, img, pipeline, test_mode=False):
    return dict(type=kind, task='pose', data_root=root, ann_file=ann,
                data_prefix=dict(img_path=img), pipeline=pipeline, test_mode=test_mode)


train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='TaskBatchSampler'),
    dataset=dict(type='MixedDataset', ratios=[1.0, 1.0, 1.0], datasets=[
        _set('CocoPoseDataset', 'data/coco/', 'annotations/person_keypoints_train2017.json',
             'train2017/', train_pipeline),
        _set('CrowdPoseDataset', 'data/crowdpose/', 'annotations/mmpose_crowdpose_trainval.json',
             'images/', train_pipeline),
        _set('AP10KDataset', 'data/ap10k/', 'annotations/ap10k-train-split1.json', 'data/',
             train_pipeline)]))
val_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='MixedDataset', datasets=[
        _set('CocoPoseDataset', 'data/coco/', 'annotations/person_keypoints_val2017.json',
             'val2017/', val_pipeline, True)]))
test_dataloader = val_dataloader
val_evaluator = [dict(type='PoseMetric', tasks='pose')]
test_evaluator = val_evaluator

# Stage 3: AdamW 1e-4, weight decay 0, cosine with 3% warm-up, 12 epochs; 0.1x learning rate
# for the decoder backbone, the deformable sampling offsets and the reference points.
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0),
    clip_grad=dict(max_norm=0.1),
    paramwise_cfg=dict(custom_keys={'decoders.pose.backbone': dict(lr_mult=0.1),
                                    'sampling_offsets': dict(lr_mult=0.1),
                                    'reference_points': dict(lr_mult=0.1)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=0.03 * max_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0.03 * max_epochs,
         end=max_epochs, convert_to_iter_based=True)]
