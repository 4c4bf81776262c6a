"""Chat templates, named as xtuner names them so its configs' ``prompt_template`` carry over."""
from dataclasses import dataclass
from typing import Optional

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's "
                 "questions.")


@dataclass(frozen=True)
class ChatTemplate:
    """How one conversation turns into text.

    ``system`` and ``instruction`` are format strings (``{system}``, ``{input}``); the answer
    follows the instruction and ends with ``suffix`` (or the tokenizer's EOS when
    ``suffix_as_eos`` is False and ``suffix`` is empty); ``sep`` joins rounds.
    """
    system: str
    instruction: str
    suffix: str = ''
    sep: str = ''
    suffix_as_eos: bool = False
    default_system: Optional[str] = None
    stop_words: tuple[str, ...] = ()


TEMPLATES: dict[str, ChatTemplate] = {
    # Vicuna v1 (the paper's LLM); the answer ends with the tokenizer's EOS.
    'vicuna': ChatTemplate(system='{system} ', instruction='USER: {input} ASSISTANT:',
                           sep=' ', default_system=VICUNA_SYSTEM),
    'internlm2_chat': ChatTemplate(
        system='<|im_start|>system\n{system}<|im_end|>\n',
        instruction='<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n',
        suffix='<|im_end|>', sep='\n', suffix_as_eos=True, stop_words=('<|im_end|>',)),
    'qwen_chat': ChatTemplate(
        system='<|im_start|>system\n{system}<|im_end|>\n',
        instruction='<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n',
        suffix='<|im_end|>', sep='\n', suffix_as_eos=True, stop_words=('<|im_end|>',)),
    'llama3_chat': ChatTemplate(
        system='<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>',
        instruction=('<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>'
                     '<|start_header_id|>assistant<|end_header_id|>\n\n'),
        suffix='<|eot_id|>', suffix_as_eos=True, stop_words=('<|eot_id|>',)),
    # No system prompt and bare role markers: for tiny models trained from scratch.
    'plain': ChatTemplate(system='', instruction='USER: {input} ASSISTANT:', sep=' '),
}


def get_template(name: str) -> ChatTemplate:
    """The template called ``name`` (xtuner's names, plus ``plain``)."""
    if name not in TEMPLATES:
        raise KeyError(f'model.template: unknown chat template {name!r}; '
                       f'known: {sorted(TEMPLATES)}')
    return TEMPLATES[name]
