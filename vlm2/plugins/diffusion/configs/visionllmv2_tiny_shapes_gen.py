# The tiny generalist with the generation plugin: ShapesWorld text-to-image ([GEN]) and
# instruction editing ([EDIT]) added to the main tiny recipe. The decoders work in pixel space
# (no VAE) on 64 px pictures folded 2x2 into 12 channels at 32x32 (pixel_patch=2); the
# ShapesWorld images (128 px) are resized to 64 px by LoadDiffusionImages.
_base_ = ['../../../../configs/visionllmv2/visionllmv2_tiny_shapes.py']
custom_imports = dict(imports=['vlm2.plugins.chat', 'vlm2.plugins.diffusion'],
                      allow_failed_imports=False)

gen_size = 64
pixel_patch = 2
latent = 3 * pixel_patch ** 2
unet = dict(sample_size=gen_size // pixel_patch, in_channels=latent, out_channels=latent,
            block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
            down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
            up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'),
            # attention_head_dim is diffusers' number of heads here: 2 heads of 32 channels.
            # 8 heads of 8 spent 40% of a training step in attention on 2 cores; with 2 the
            # UNet trains 1.5x faster (fixed-condition benchmark: 629 vs 447 iterations in
            # 6 min, the same loss per iteration).
            cross_attention_dim=64, attention_head_dim=2,
            # The UNet also reads an attention-pooled summary of the condition through its
            # time embedding, as DeepFloyd IF's pixel-space UNet does ('text'), so every
            # ResNet block sees the caption, not only the cross-attention at 16 and 8 px.
            # Trained 8 min on a fixed caption embedding (no LLM), colour hits went from 0.08
            # to 0.39 with it (plugin README, "What limited it in the fourth session").
            addition_embed_type='text', addition_embed_type_num_heads=4)
# v-prediction, sampled from t=999 ('trailing'): ShapesWorld pictures are a light background
# (mean 0.8 in [-1, 1], std 0.12). Under epsilon prediction the model never learns that
# offset at high noise, where it is a few percent of the input, so DDIM from pure noise
# drifted to mid-grey noise even though one-step denoising was accurate (measured on a
# 2,800-iteration model: x0 from pure noise had mean 0.0). v-prediction asks for x0 there.
noise = dict(type='DDPMScheduler', num_train_timesteps=1000,
             beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction',
             timestep_spacing='trailing')
# The paper's alignment loss, against a frozen CLIP text encoder of zero layers (token and
# position embeddings and the final LayerNorm, drawn from a seed): every word of the caption
# is its own direction at its own place, so the target tells captions apart from the first
# step, which a randomly layered encoder does not. Without it the condition collapsed to one
# value before the UNet learnt to read it (plugin README). Weight 1.0, not the paper's 0.1.
text_encoder = dict(config=dict(num_hidden_layers=0, hidden_size=64, intermediate_size=256,
                                num_attention_heads=4),
                    tokenizer=dict(type='ShapesWorldTokenizer'), seed=0)
# noise_repeats: four noise levels per sample and step share one pass of the LLM; the UNet
# is what learns slowest here (plugin README, "Where the time goes").
# teacher_prob: half the samples' denoising loss reads the frozen encoder's embedding instead
# of the link's condition, the tiny stand-in for the paper's UNet pretrained on CLIP text
# embeddings; the alignment loss brings the link's condition there (decoder docstring).
decoder = dict(scheduler=noise, sampler='DDIMScheduler', vae=None, pixel_patch=pixel_patch,
               image_size=gen_size, conditioner=dict(num_tokens=77, num_heads=4),
               text_encoder=text_encoder, align_weight=1.0, teacher_prob=0.5,
               noise_repeats=4)
# Measured (README) with the tower trained from scratch inside the recipe (so not frozen);
# the demo's pretrained tower (configs/visionllmv2/visionllmv2_tiny_tower_pretrain.py) is not
# used here.
model = dict(vision_tower=dict(init_cfg=None, frozen=False), super_link=dict(decoders=dict(
    gen=dict(type='TextToImageDecoder', unet=dict(config=unet), cond_dropout=0.1,
             test_cfg=dict(num_steps=20, guidance_scale=3.0, seed=0), **decoder),
    edit=dict(type='ImageEditDecoder', unet=dict(config=dict(unet, in_channels=2 * latent)),
              cond_dropout=0.05, source_dropout=0.05,
              test_cfg=dict(num_steps=20, guidance_scale=3.0, image_guidance_scale=1.5,
                            seed=0), **decoder))))

data_root = 'data/shapes_world/'
tile_size = 128  # as configs/_base_/datasets/shapes_world.py
max_tiles = 1
gen_load = dict(type='LoadDiffusionImages', size=gen_size, on_size_mismatch='error')
# the MLLM's own input (tiles, the base recipe's image_pipeline), then the decoders' images
gen_pipeline = [
    dict(type='LoadImageIfAny'),
    dict(type='DynamicTiles', tile_size=tile_size, max_tiles=max_tiles),
    gen_load,
    dict(type='PackVLMInputs', fields=('target_image', 'caption')),
]
edit_pipeline = gen_pipeline[:-1] + [
    dict(type='PackVLMInputs', fields=('target_image', 'source_image', 'instruction',
                                       'edit_type')),
]
gen_train = dict(type='CaptionImageDataset', task='gen', data_root=data_root,
                 ann_file='annotations/captions_train.jsonl',
                 data_prefix=dict(img_path='images/'), pipeline=gen_pipeline)
gen_val = dict(gen_train, ann_file='annotations/captions_val.jsonl', test_mode=True)
edit_train = dict(type='InstructEditDataset', task='edit', data_root=data_root,
                  ann_file='annotations/edits_train.jsonl',
                  data_prefix=dict(img_path='images/'), pipeline=edit_pipeline)
edit_val = dict(edit_train, ann_file='annotations/edits_val.jsonl', test_mode=True)

train_dataloader = dict(dataset=dict(
    datasets=[{{_base_.vqa_train}}, gen_train, edit_train], ratios=[1.0, 1.0, 1.0]))
val_dataloader = dict(dataset=dict(datasets=[{{_base_.vqa_val}}, gen_val, edit_val]))
test_dataloader = val_dataloader
val_evaluator = [dict(type='VQAMetric', tasks='vqa'), dict(type='ShapesGenerationMetric')]
test_evaluator = val_evaluator

# The link side (LLM, query tables, conditioner) learns at a tenth of the UNets' rate, the
# paper's stage-2 ratio of LLM to decoders. A diffusion loss gives the condition no useful
# gradient until the UNet reads it, and in the meantime it pulls every caption's condition
# towards one point. benchmarks/phrase_probe.py (nearest-centroid accuracy of the [GEN]
# states by colour / kind / place, 160 training captions): 0.68 / 0.66 / 0.68 initialised;
# after 300 iterations 0.31 / 0.40 / 0.17 at the full rate, 0.68 / 0.71 / 0.67 at a tenth;
# after the 2,300-iteration benchmark 0.23 / 0.24 / 0.14 at the full rate, 0.33 / 0.41 / 0.34
# at a tenth. It slows the collapse; it does not stop it (plugin README).
# bypass_duplicate: the tied input and output embeddings.
optim_wrapper = dict(paramwise_cfg=dict(
    custom_keys={'llm.': dict(lr_mult=0.1), 'super_link.queries': dict(lr_mult=0.1),
                 'conditioner': dict(lr_mult=0.1)},
    bypass_duplicate=True))
