# The tiny generation recipe in the latent space of a tiny VAE pretrained on ShapesWorld, as
# the paper's decoders run in Stable Diffusion's pretrained VAE's latent space. Write the VAE
# first (benchmark.py does when the folder is missing):
#   .venv/bin/python vlm2/plugins/diffusion/vae_pretrain.py --out-dir work_dirs/shapes_world_vae
# 64 px pictures become 16x16x4 latents, a quarter of the positions of the pixel recipe's
# 32x32x12: the 20-minute benchmark made twice the iterations (plugin README, "In the latent
# space of a pretrained tiny VAE").
_base_ = ['visionllmv2_tiny_shapes_gen.py']

vae = dict(_delete_=True, pretrained='work_dirs/shapes_world_vae')  # the base has none
unet = dict(sample_size=16, in_channels=4, out_channels=4)
# latents are not confined to [-1, 1] as pixels are, so DDIM must not clip its x0 estimates
# (Stable Diffusion's scheduler config says the same)
noise = dict(clip_sample=False)
model = dict(super_link=dict(decoders=dict(
    gen=dict(vae=vae, scheduler=noise, unet=dict(config=unet)),
    edit=dict(vae=vae, scheduler=noise, unet=dict(config=dict(unet, in_channels=8))))))
