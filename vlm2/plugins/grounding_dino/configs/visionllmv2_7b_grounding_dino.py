# The perception decoder at paper scale: Grounding DINO Swin-T (mmdet's, weights from a local
# file) behind VisionLLM v2 7B. Mix in data sources (COCO, RefCOCO, CrowdHuman adapters) in a
# recipe that inherits this file.
_base_ = ['../../../../configs/_base_/models/visionllmv2_7b.py', '_base_/paper_losses.py']
custom_imports = dict(imports=['vlm2.plugins.chat', 'vlm2.plugins.grounding_dino'],
                      allow_failed_imports=False)

grounding_dino_checkpoint = 'checkpoints/groundingdino_swint_ogc_mmdet-822d7e9d.pth'
embed_dims = 256
perception = dict(
    type='GroundingDINODecoder',
    num_queries=4,  # super-link queries per phrase (paper)
    max_per_img=dict(default=100, rec=1, res=1),
    detector_checkpoint=grounding_dino_checkpoint,
    detector=dict(
        num_queries=900,
        with_box_refine=True,
        as_two_stage=True,
        num_feature_levels=4,
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=False),
        # Swin-T; its stride-4 stage feeds the mask branch, the others the neck
        backbone=dict(type='SwinTransformer', embed_dims=96, depths=[2, 2, 6, 2],
                      num_heads=[3, 6, 12, 24], window_size=7, mlp_ratio=4, qkv_bias=True,
                      qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.2,
                      patch_norm=True, out_indices=(0, 1, 2, 3), with_cp=True,
                      convert_weights=False),
        neck=dict(type='ChannelMapper', in_channels=[192, 384, 768], kernel_size=1,
                  out_channels=embed_dims, act_cfg=None, bias=True,
                  norm_cfg=dict(type='GN', num_groups=32), num_outs=4),
        encoder=dict(
            num_layers=6,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_levels=4, dropout=0.0),
                ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=2048, ffn_drop=0.0)),
            text_layer_cfg=dict(
                self_attn_cfg=dict(num_heads=4, embed_dims=embed_dims, dropout=0.0),
                ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=1024, ffn_drop=0.0)),
            fusion_layer_cfg=dict(v_dim=embed_dims, l_dim=embed_dims, embed_dim=1024,
                                  num_heads=4, init_values=1e-4)),
        decoder=dict(
            num_layers=6,
            return_intermediate=True,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=8, dropout=0.0),
                cross_attn_text_cfg=dict(embed_dims=embed_dims, num_heads=8, dropout=0.0),
                cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=8, dropout=0.0),
                ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=2048, ffn_drop=0.0)),
            post_norm_cfg=None),
        positional_encoding=dict(num_feats=128, normalize=True, offset=0.0, temperature=20),
        bbox_head=dict(
            type='VLM2PhraseGroundingHead',
            num_classes=256,  # up to 256 phrases per image
            sync_cls_avg_factor=True,
            pixel_in_channels=96,
            num_points=12544,
            contrastive_cfg=dict(max_text_len=256, log_scale=0.0, bias=False),
            **_base_.losses),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100)),
        train_cfg=_base_.matching,
        test_cfg=dict(max_per_img=300)))
model = dict(super_link=dict(decoders=dict(perception=perception)))

# The decoder's own image: short side 800 (multi-scale 480-800 in training), as mmdet's recipe.
train_scales = [(1333, s) for s in range(480, 801, 32)]
test_scale = (1333, 800)
det_train_pipeline = [
    dict(type='LoadImageIfAny'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PhraseSlots', routing_token='[DET]', templates='det', num_negatives=(0, 40)),
    dict(type='mmdet.RandomFlip', prob=0.5),
    dict(type='FlipPhrases'),
    dict(type='DynamicTiles', tile_size=336, max_tiles=4),
    dict(type='mmdet.RandomChoiceResize', scales=train_scales, keep_ratio=True,
         resize_type='mmdet.Resize'),
    dict(type='PackDecoderInputs'),
    dict(type='PackVLMInputs', fields=('det_inputs', 'det_sample', 'phrase_names',
                                       'phrase_classes')),
]
det_test_pipeline = [
    dict(type='LoadImageIfAny'),
    dict(type='PhraseSlots', routing_token='[DET]', templates='det', shuffle=False),
    dict(type='DynamicTiles', tile_size=336, max_tiles=4),
    dict(type='mmdet.Resize', scale=test_scale, keep_ratio=True),
    dict(type='PackDecoderInputs'),
    dict(type='PackVLMInputs', fields=('det_inputs', 'det_sample', 'phrase_names',
                                       'phrase_classes')),
]
