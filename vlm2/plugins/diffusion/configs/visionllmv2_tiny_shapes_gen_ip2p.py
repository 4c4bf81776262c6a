# The tiny Stable Diffusion recipe with a pretrained tiny InstructPix2Pix for [EDIT], as the
# paper's [EDIT] decoder starts from InstructPix2Pix: the tiny SD's UNet widened to read the
# source latent and trained on ShapesWorld's edit triplets, conditioned on the same text
# encoder's embedding of the instruction. Write the folder after the SD's (benchmark.py
# does both when they are missing, outside its budget):
#   .venv/bin/python vlm2/plugins/diffusion/ip2p_pretrain.py --out-dir work_dirs/shapes_world_ip2p
_base_ = ['visionllmv2_tiny_shapes_gen_sd.py']

# The contrastive alignment for both decoders, and five times the alignment for [EDIT]: at
# weight 1 the link's [EDIT] condition carried which colours an instruction names but not
# their order, so a recolouring ("make the red hexagon orange") asked for the colour the shape
# already had (6 of 35 new colours right); at 5 its condition probe is 0.999 and edit
# accuracy 0.62 against 0.42 (plugin README, twentieth session).
# Unlike the paper, the [EDIT] UNet is frozen here, as [GEN]'s is (teacher_prob 0, as for
# [GEN]): trained through the link in the budget, the tiny InstructPix2Pix lost what it had
# learnt in pretraining (0.62 from the exact instruction embeddings after one run, against
# 0.79 frozen).
# denoise_interval 4: three of every four [EDIT] steps train the alignment alone, which
# brought the link's condition to the exact embeddings' score (plugin README, twenty-first
# session).
model = dict(super_link=dict(decoders=dict(
    gen=dict(align_contrast=dict(weight=1.0)),
    edit=dict(unet=dict(pretrained='work_dirs/shapes_world_ip2p', subfolder='unet'),
              train_unet=False, teacher_prob=0.0, denoise_interval=4,
              align_weight=5.0, align_contrast=dict(weight=5.0)))))
