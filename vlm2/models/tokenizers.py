"""Tokenizer builders, registered in ``TOKENIZERS`` so a config can name either kind."""
from typing import Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vlm2.registry import TOKENIZERS
from .hf_builders import check_local_folder

# Words of the chat templates and common instructions, so prompts written by hand and by
# plugins' templates stay in a word-level vocabulary.
BASE_WORDS = tuple("""
a an the of in on at to for and or is are was be it this that these those there what which
who where when how many much please can you could would image picture photo region object
objects all each every any detect find locate segment ground show give tell describe answer
question short word single phrase caption draw generate edit make with without from by as
chat between curious user artificial intelligence assistant gives helpful detailed polite
answers user's questions system yes no not none one two three four five six seven eight nine
ten 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 . , ? ! : ; ' " ( ) - / _ < > [ ]
""".split()) + tuple(f'region{i}' for i in range(1, 21))


@TOKENIZERS.register_module()
def PretrainedTokenizer(path: str, **kwargs) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local folder (an LLM's folder, or one of its own)."""
    check_local_folder(path, 'model.tokenizer.path')
    return AutoTokenizer.from_pretrained(path, local_files_only=True, **kwargs)


@TOKENIZERS.register_module()
def WordLevelTokenizer(words: Sequence[str],
                       extra_words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """A lower-case word-level tokenizer built in code from a word list (tiny models).

    The vocabulary is sorted, so every process builds the same ids. Text is split as
    ``\\w+|[^\\w\\s]+``; an unknown word becomes ``<unk>``, which the conversation encoder
    reports. A word level keeps a tiny model's sequences short, so it learns in minutes.
    """
    specials = ['<unk>', '<s>', '</s>', '<pad>']
    vocab_words = sorted(set(w.lower() for w in (*BASE_WORDS, *words, *extra_words)) - set(specials))
    vocab = {w: i for i, w in enumerate(specials + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='<unk>', bos_token='<s>',
                                   eos_token='</s>', pad_token='<pad>')


@TOKENIZERS.register_module()
def ShapesWorldTokenizer(extra_words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """:func:`WordLevelTokenizer` over ShapesWorld's vocabulary: the tiny configs' tokenizer."""
    from vlm2.datasets.shapes_world import WORDS
    return WordLevelTokenizer(WORDS, extra_words)
