# VisionLLM v2 at paper scale: CLIP-L/14-336 + Vicuna-7B v1.5 from local folders.
clip_path = 'checkpoints/clip-vit-large-patch14-336'
llm_path = 'checkpoints/vicuna-7b-v1.5'
model = dict(
    type='VisionLLMv2',
    tokenizer=dict(type='PretrainedTokenizer', path=llm_path, use_fast=True),
    vision_tower=dict(type='VisionTower', pretrained=clip_path, model_class='CLIPVisionModel',
                      select_layer=-2, frozen=True),
    llm=dict(pretrained=llm_path, torch_dtype='bfloat16'),
    super_link=dict(decoders=dict()),
    template='vicuna',
    max_length=4096,
    data_preprocessor=dict(type='VLMDataPreprocessor'),
    test_cfg=dict(routing='generate', max_new_tokens=512))
