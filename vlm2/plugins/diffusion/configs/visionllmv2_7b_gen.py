# Paper scale: the 7B model with Stable Diffusion v1.5 for [GEN] and InstructPix2Pix for
# [EDIT], all from local folders (diffusers layout: unet/, vae/, scheduler/, text_encoder/,
# tokenizer/). As in the paper, the UNet is frozen for generation and trained for editing;
# the condition is aligned with SD's CLIP text embedding of the caption (weight 0.1).
_base_ = ['../../../../configs/_base_/models/visionllmv2_7b.py',
          '../../../../configs/_base_/schedules/stage1_7b.py',
          '../../../../configs/_base_/default_runtime.py']
custom_imports = dict(imports=['vlm2.plugins.chat', 'vlm2.plugins.diffusion'],
                      allow_failed_imports=False)

sd_path = 'checkpoints/stable-diffusion-v1-5'
ip2p_path = 'checkpoints/instruct-pix2pix'
clip_score_path = 'checkpoints/clip-vit-large-patch14'  # CLIPScore's model (a local folder)
inception_path = None  # FID Inception weights file (pt_inception-2015-12-05-6726825d.pth)
gen_size = 512


def _decoder(path, **kwargs):
    return dict(unet=dict(pretrained=path, subfolder='unet'),
                vae=dict(pretrained=path, subfolder='vae'),
                scheduler=dict(type='DDPMScheduler', pretrained=path, subfolder='scheduler'),
                text_encoder=dict(pretrained=sd_path), align_weight=0.1,
                sampler='DPMSolverMultistepScheduler', image_size=gen_size,
                conditioner=dict(num_tokens=77, num_heads=8), **kwargs)


model = dict(frozen_modules=['vision_tower'], super_link=dict(decoders=dict(
    gen=dict(type='TextToImageDecoder', train_unet=False, cond_dropout=0.1,
             test_cfg=dict(num_steps=25, guidance_scale=7.5, seed=0), **_decoder(sd_path)),
    edit=dict(type='ImageEditDecoder', train_unet=True, cond_dropout=0.05, source_dropout=0.05,
              test_cfg=dict(num_steps=25, guidance_scale=7.5, image_guidance_scale=1.5, seed=0),
              **_decoder(ip2p_path)))))

gen_load = dict(type='LoadDiffusionImages', size=gen_size, on_size_mismatch='resize')
image_pipeline = [dict(type='LoadImageIfAny'),
                  dict(type='DynamicTiles', tile_size=336, max_tiles=6)]
gen_pipeline = image_pipeline + [
    gen_load, dict(type='PackVLMInputs', fields=('target_image', 'caption'))]
edit_pipeline = image_pipeline + [
    gen_load, dict(type='PackVLMInputs', fields=('target_image', 'source_image',
                                                 'instruction'))]
gen_train = dict(type='CaptionImageDataset', task='gen', data_root='data/laion/',
                 ann_file='captions.jsonl', data_prefix=dict(img_path='images/'),
                 pipeline=gen_pipeline)
edit_train = dict(type='InstructEditDataset', task='edit', data_root='data/instructpix2pix/',
                  ann_file='triplets.jsonl', data_prefix=dict(img_path='images/'),
                  pipeline=edit_pipeline)
gen_val = dict(gen_train, data_root='data/coco_captions/', ann_file='val_captions.jsonl',
               test_mode=True)
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='TaskBatchSampler'),
    dataset=dict(type='MixedDataset', datasets=[gen_train, edit_train], ratios=[1.0, 1.0]))
val_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='MixedDataset', datasets=[gen_val]))
test_dataloader = val_dataloader
val_evaluator = [dict(type='CLIPScoreMetric', clip_model=clip_score_path),
                 dict(type='FIDMetric', inception_weights=inception_path)]
test_evaluator = val_evaluator
# Stage-2-like learning rate for the decoders (paper: decoders 1e-4, LLM 1e-5).
optim_wrapper = dict(optimizer=dict(lr=1e-5), paramwise_cfg=dict(
    custom_keys={'super_link.decoders': dict(lr_mult=10.0)}))
