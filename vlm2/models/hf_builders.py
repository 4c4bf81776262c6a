"""Builders of Hugging Face parts from a config: a local pretrained folder or a from-scratch config.

Nothing here touches the hub: ``from_pretrained`` gets ``local_files_only=True``.
"""
import os
from typing import Optional

import torch
import transformers
from transformers import PretrainedConfig


def build_hf_config(cfg: dict, key: str) -> PretrainedConfig:
    """``dict(type='LlamaConfig', hidden_size=...)`` → the transformers config object."""
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    cls = getattr(transformers, name, None) if isinstance(name, str) else name
    if cls is None or not (isinstance(cls, type) and issubclass(cls, PretrainedConfig)):
        raise ValueError(f'{key}.type must name a transformers config class '
                         f'(e.g. "LlamaConfig"), got {name!r}')
    return cls(**cfg)


def check_local_folder(path: str, key: str) -> str:
    """Fail clearly when a pretrained path is not a local folder (no hub access at run time)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f'{key}: {path!r} is not a local folder. vlm2 loads pretrained weights from local '
            'folders only (save them once with save_pretrained or huggingface-cli download).')
    return path


def build_hf_model(key: str,
                   pretrained: Optional[str] = None,
                   config: Optional[dict] = None,
                   model_class: str = 'AutoModelForCausalLM',
                   torch_dtype: Optional[str] = None,
                   **kwargs) -> torch.nn.Module:
    """Build ``model_class`` from exactly one of a local folder or a config dict.

    Args:
        key: the config key being built, named in errors (``'model.llm'``).
        pretrained: a local folder written by ``save_pretrained``.
        config: a transformers config as a dict with ``type``.
        model_class: an Auto class or a concrete model class of transformers.
        torch_dtype: e.g. ``'bfloat16'``; default keeps the checkpoint's or fp32.
    """
    if (pretrained is None) == (config is None):
        raise ValueError(f'{key}: give exactly one of pretrained= (a local folder) or config=')
    cls = getattr(transformers, model_class, None)
    if cls is None:
        raise ValueError(f'{key}.model_class: transformers has no {model_class!r}')
    dtype = getattr(torch, torch_dtype) if isinstance(torch_dtype, str) else torch_dtype
    if pretrained is not None:
        check_local_folder(pretrained, f'{key}.pretrained')
        if dtype is not None:
            kwargs['dtype'] = dtype
        return cls.from_pretrained(pretrained, local_files_only=True, **kwargs)
    hf_config = build_hf_config(config, f'{key}.config')
    model = cls.from_config(hf_config, **kwargs) if hasattr(cls, 'from_config') \
        else cls(hf_config, **kwargs)
    return model.to(dtype) if dtype is not None else model
