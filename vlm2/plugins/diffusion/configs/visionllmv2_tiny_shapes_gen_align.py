# The tiny generation recipe plus the paper's alignment loss, against a frozen text encoder
# of zero layers: CLIP's token and position embeddings and final LayerNorm, drawn at random.
# Every word of the caption is its own direction at its own place, so the target tells
# captions apart from the first step, which the tiny model's own condition does not
# (plugin README, "Alignment against a zero-layer text encoder"). Not the recipe: its one
# benchmark run, on a slow machine, was too short to show whether the pictures follow it.
_base_ = ['./visionllmv2_tiny_shapes_gen.py']
text_encoder = dict(config=dict(num_hidden_layers=0, hidden_size=64, intermediate_size=256,
                                num_attention_heads=4),
                    tokenizer=dict(type='ShapesWorldTokenizer'), seed=0)
model = dict(super_link=dict(decoders=dict(
    gen=dict(text_encoder=text_encoder, align_weight=1.0),
    edit=dict(text_encoder=text_encoder, align_weight=1.0))))
