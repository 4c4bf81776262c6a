# The tiny generation recipe on a tiny Stable Diffusion pretrained on ShapesWorld, as the
# paper's [GEN] decoder is SD v1.5 with its pretrained UNet and CLIP text encoder. Write the
# folder first (benchmark.py does when it is missing, outside its budget):
#   .venv/bin/python vlm2/plugins/diffusion/sd_pretrain.py --out-dir work_dirs/shapes_world_sd
# As in the paper, the [GEN] UNet is frozen and the super link learns to give it a condition
# it reads, helped by the alignment loss towards the pretrained text encoder's embedding of
# the caption; the [EDIT] UNet starts from the same weights with 8 input channels (the new
# ones at zero, InstructPix2Pix's initialisation) and trains.
_base_ = ['visionllmv2_tiny_shapes_gen_vae.py']

sd = 'work_dirs/shapes_world_sd'
unet = dict(_delete_=True, pretrained=sd, subfolder='unet')
text_encoder = dict(_delete_=True, pretrained=sd, zero_padding=True)  # as pretrained
# final_norm=False: the conditioner's output can then be zero past the caption's end, as the
# encoder's embedding the UNet was pretrained on is
conditioner = dict(num_tokens=77, num_heads=4, final_norm=False)
model = dict(super_link=dict(decoders=dict(
    # teacher_prob: no teacher condition for a frozen UNet, which already reads the encoder
    gen=dict(unet=unet, text_encoder=text_encoder, conditioner=conditioner, teacher_prob=0.0),
    # text guidance 2, not 3: the 45-minute tiny InstructPix2Pix on the exact instruction
    # embeddings scores 0.71 at 2 / 1.5 against 0.60 at 3 / 1.5 (plugin README, twentieth
    # session)
    edit=dict(unet=unet, text_encoder=text_encoder, conditioner=conditioner,
              test_cfg=dict(guidance_scale=2.0)))))
# The base recipe slows the conditioner to a tenth because, while its UNet could not yet read
# any condition, the diffusion loss pulled every caption's condition to one point. A
# pretrained UNet reads it from the first step.
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'conditioner': dict(lr_mult=1.0)}))
