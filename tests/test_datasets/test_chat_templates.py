"""Chat templates under xtuner's names, and what carries LM loss."""
import pytest

from vlm2.datasets import ConversationEncoder, get_template
from vlm2.models.tokenizers import WordLevelTokenizer

CONV = [{'from': 'human', 'value': 'how many'}, {'from': 'gpt', 'value': 'two'},
        {'from': 'human', 'value': 'red'}, {'from': 'gpt', 'value': 'yes'}]


def encoder(template):
    tok = WordLevelTokenizer(['how', 'many', 'two', 'red', 'yes', 'im_start', 'im_end', 'user',
                              'assistant', 'system'])
    tok.add_tokens(['<im_patch>', '[EMB]', '<|im_end|>', '<|eot_id|>'], special_tokens=True)
    return ConversationEncoder(tok, template, 256, routing={})


@pytest.mark.parametrize('name', ['vicuna', 'internlm2_chat', 'qwen_chat', 'llama3_chat',
                                  'plain'])
def test_only_answers_are_supervised(name):
    enc = encoder(name)
    ids, labels = enc.encode(CONV, 0)
    tok = enc.tokenizer
    supervised = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    end = '<|im_end|>' if get_template(name).suffix == '<|im_end|>' else \
        '<|eot_id|>' if name == 'llama3_chat' else '</s>'
    assert supervised.split() == ['two', end, 'yes', end]
    prompt_ids, _ = enc.encode(CONV[:3], 0, for_generation=True)
    assert prompt_ids == ids[:len(prompt_ids)]  # the prompt is a prefix of the training text


def test_unknown_template_is_a_clear_error():
    with pytest.raises(KeyError, match='model.template.*vicuna'):
        get_template('vicunaa')


def test_roles_must_alternate():
    with pytest.raises(ValueError, match='ann.json id=3.*alternates'):
        encoder('plain').encode(CONV[1:], 0, where='ann.json id=3')
