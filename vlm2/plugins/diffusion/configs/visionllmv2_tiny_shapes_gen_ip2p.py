# The tiny Stable Diffusion recipe with a pretrained tiny InstructPix2Pix for [EDIT], as the
# paper's [EDIT] decoder starts from InstructPix2Pix: the tiny SD's UNet widened to read the
# source latent and trained on ShapesWorld's edit triplets, conditioned on the same text
# encoder's embedding of the instruction. Write the folder after the SD's (benchmark.py
# does both when they are missing, outside its budget):
#   .venv/bin/python vlm2/plugins/diffusion/ip2p_pretrain.py --out-dir work_dirs/shapes_world_ip2p
# As in the paper, the [EDIT] UNet keeps training with the super link.
_base_ = ['visionllmv2_tiny_shapes_gen_sd.py']

model = dict(super_link=dict(decoders=dict(edit=dict(
    unet=dict(pretrained='work_dirs/shapes_world_ip2p', subfolder='unet')))))
