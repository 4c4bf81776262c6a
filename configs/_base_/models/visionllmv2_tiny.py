# The tiny VisionLLM v2: the same classes as the 7B model, built from small configs, so the
# whole path trains on a CPU. The tokenizer is word-level over ShapesWorld's vocabulary.
image_size = 128
model = dict(
    type='VisionLLMv2',
    tokenizer=dict(type='ShapesWorldTokenizer'),
    vision_tower=dict(
        type='VisionTower',
        config=dict(type='CLIPVisionConfig', hidden_size=128, intermediate_size=512,
                    num_hidden_layers=4, num_attention_heads=4, image_size=image_size,
                    patch_size=8, attn_implementation='eager'),
        model_class='CLIPVisionModel',
        select_layer=-2,
        pixel_shuffle=2,  # 8-px patches see small shapes; 2x2 merging keeps 64 LLM tokens
        # From scratch, CLIP's patchify stem learns shape slowly: trained alone on "which
        # shapes are in the image" (benchmarks/tower_shape_probe.py, 300 steps) the tower
        # reached label accuracy 0.664 read by mean pooling (majority 0.656); with three
        # 3x3 stride-2 convs in its place (early convolutions, Xiao et al. 2021) 0.903.
        conv_stem=[24, 48, 96],
        frozen=False),  # trained from scratch here; the paper's CLIP is frozen
    # A from-scratch LLM lacks what a pretrained one brings: token states that carry their
    # local context. Measured (benchmarks/phrase_probe.py): with full attention everywhere
    # the [EMB] states after "circle[DET]" still encode the phrase's slot, not its words,
    # after 1,180 perception iterations (R2 by class 0.006), so no decoder could tell the
    # classes apart. Two sliding-window layers first (Qwen2's layer_types, as Gemma-style
    # local/global LLMs do) let each state see its phrase from the first step (R2 0.66).
    llm=dict(config=dict(type='Qwen2Config', hidden_size=256, intermediate_size=688,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         use_sliding_window=True, sliding_window=4,
                         # one entry per layer: change it with num_hidden_layers
                         layer_types=['sliding_attention'] * 2 + ['full_attention'] * 2,
                         # at these sizes on a CPU, plain attention is faster than SDPA's
                         # flash kernel (demo training step 0.35-0.38 s vs 0.38-0.40 s)
                         attn_implementation='eager')),
    super_link=dict(decoders=dict()),
    template='plain',
    max_length=512,
    data_preprocessor=dict(type='VLMDataPreprocessor'),
    test_cfg=dict(routing='generate', max_new_tokens=32))
