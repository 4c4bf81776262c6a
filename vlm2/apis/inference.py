"""Inference: images + prompts → replies, decoder results and pictures."""
import copy
from typing import Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from tqdm import tqdm

from vlm2.registry import MODELS
from vlm2.structures import VLMDataSample


def init_model(config: Union[str, Config], checkpoint: Optional[str] = None,
               device: str = 'cpu', cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build the model of a config and load a checkpoint; the config rides along as ``.cfg``."""
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'vlm2'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.cfg = cfg
    return model.to(device).eval()


def build_inference_pipeline(cfg: Config) -> Compose:
    """The config's ``image_pipeline`` (loading and tiling) followed by packing."""
    steps = list(cfg.get('image_pipeline', [dict(type='LoadImageIfAny'),
                                             dict(type='DynamicTiles', tile_size=336)]))
    return Compose(steps + [dict(type='PackVLMInputs')])


@torch.no_grad()
def inference(model: torch.nn.Module, images: Sequence[Optional[str]], prompts: Sequence[str],
              batch_size: int = 8, progress: bool = True) -> list[VLMDataSample]:
    """Reply to each (image, prompt) pair, in batches; decoders fire where routing tokens
    are generated. An image path of None asks a text-only question."""
    if len(images) != len(prompts):
        raise ValueError(f'{len(images)} images but {len(prompts)} prompts')
    pipeline = build_inference_pipeline(model.cfg)
    results: list[VLMDataSample] = []
    bar = tqdm(total=len(prompts), desc='inference', disable=not progress)
    for start in range(0, len(prompts), batch_size):
        items = []
        for i in range(start, min(start + batch_size, len(prompts))):
            text = prompts[i] if images[i] is None or '<image>' in prompts[i] \
                else f'<image>\n{prompts[i]}'
            items.append(pipeline(dict(img_path=images[i], sample_id=str(i), task='infer',
                                       conversation=[{'from': 'human', 'value': text}])))
        results += model.test_step(pseudo_collate(items))
        bar.update(len(items))
    bar.close()
    return results
