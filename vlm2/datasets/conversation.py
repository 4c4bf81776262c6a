"""Conversations → token ids and LM labels, with image runs and super-link query runs."""
import re
from typing import Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase

from .chat_template import ChatTemplate, get_template

IGNORE_INDEX = -100
BRACKET_TOKEN = re.compile(r'(\[[A-Z][A-Z0-9_]*\])')


class ConversationEncoder:
    """Tokenises LLaVA-style conversations the way the MLLM consumes them.

    - Each ``<image>`` becomes a run of ``image_token`` ids, as many as the image's features.
    - Each routing token in an answer is followed by its decoder's run of ``[EMB]``
      placeholders. The routing token is supervised; ``[EMB]`` positions are not.
    - Only answers (and their end marker) carry LM labels.
    - Too-long training samples are cut at ``max_length``, never inside an image run or a
      routing run; each cut is logged.

    Args:
        tokenizer: a HF tokenizer that already holds the special tokens.
        template: a template name of :data:`~vlm2.datasets.chat_template.TEMPLATES` or object.
        max_length: the LLM's maximum sequence length.
        routing: ``{routing token: number of queries}``.
        system: the system prompt; default the template's.
    """

    def __init__(self,
                 tokenizer: PreTrainedTokenizerBase,
                 template: Union[str, ChatTemplate],
                 max_length: int,
                 routing: dict[str, int],
                 image_token: str = '<im_patch>',
                 emb_token: str = '[EMB]',
                 image_placeholder: str = '<image>',
                 region_token: str = '<region>',
                 system: Optional[str] = None) -> None:
        self.tokenizer = tokenizer
        self.template = get_template(template) if isinstance(template, str) else template
        self.max_length = max_length
        self.routing = dict(routing)
        self.image_placeholder = image_placeholder
        self.system = self.template.default_system if system is None else system
        ids = tokenizer.convert_tokens_to_ids
        self.image_id = ids(image_token)
        self.region_id = ids(region_token)
        self.emb_id = ids(emb_token)
        self.routing_ids = {t: ids(t) for t in self.routing}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        self.num_truncated = 0
        self._cache: dict[str, list[int]] = {}

    # ---- one sample --------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        # Template pieces and short answers repeat: caching them keeps tokenisation, which
        # runs in the training step, off the profile.
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids if text else []
            if len(self._cache) < 100_000:
                self._cache[text] = ids
        return list(ids)

    def _prompt(self, text: str, num_image_tokens: int) -> tuple[list[int], int]:
        pieces = text.split(self.image_placeholder)
        out = self._ids(pieces[0])
        for piece in pieces[1:]:
            out += [self.image_id] * num_image_tokens + self._ids(piece)
        return out, len(pieces) - 1

    def _answer(self, text: str, where: str) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        for piece in BRACKET_TOKEN.split(text):
            if BRACKET_TOKEN.fullmatch(piece):
                if piece not in self.routing:
                    raise ValueError(f'{where}: unknown routing token {piece} in the answer '
                                     f'{text!r}; the configured decoders own '
                                     f'{sorted(self.routing) or "no routing tokens"}')
                run = [self.emb_id] * self.routing[piece]
                ids += [self.routing_ids[piece]] + run
                labels += [self.routing_ids[piece]] + [IGNORE_INDEX] * len(run)
            else:
                piece_ids = self._ids(piece)
                ids += piece_ids
                labels += piece_ids
        return ids, labels

    def encode(self, conversation: Sequence[dict], num_image_tokens: int,
               for_generation: bool = False, where: str = 'sample') -> tuple[list[int], list[int]]:
        """Token ids and labels of one conversation.

        Args:
            conversation: LLaVA turns; a leading ``system`` turn overrides the system prompt.
            num_image_tokens: length of the image run (0 for a sample without image).
            for_generation: drop a trailing answer and end with the generation prompt.
            where: names the sample in errors (annotation file and id).
        """
        turns = list(conversation)
        system = self.system
        if turns and turns[0].get('from') == 'system':
            system = turns.pop(0)['value']
        if for_generation and turns and turns[-1].get('from') == 'gpt':
            turns = turns[:-1]
        roles = [t.get('from') for t in turns]
        expected = ['human', 'gpt'] * (len(turns) // 2) + ['human'] * (len(turns) % 2)
        if not turns or roles != expected:
            raise ValueError(f'{where}: a conversation alternates human and gpt turns, '
                             f'starting with human; got {roles}')
        if for_generation and roles[-1] != 'human':
            raise ValueError(f'{where}: nothing to answer: the conversation ends with an answer')

        tpl = self.template
        bos = self.tokenizer.bos_token_id
        ids = [bos] if bos is not None else []
        labels = [IGNORE_INDEX] * len(ids)
        images = 0
        for i in range(0, len(turns), 2):
            prompt = tpl.instruction.format(input=turns[i]['value'])
            if i == 0 and system:
                prompt = tpl.system.format(system=system) + prompt
            elif i > 0:
                prompt = tpl.sep + prompt
            p_ids, n = self._prompt(prompt, num_image_tokens)
            images += n
            ids += p_ids
            labels += [IGNORE_INDEX] * len(p_ids)
            if i + 1 < len(turns):
                a_ids, a_labels = self._answer(turns[i + 1]['value'], where)
                end = self._ids(tpl.suffix) if tpl.suffix else [self.tokenizer.eos_token_id]
                ids += a_ids + end
                labels += a_labels + end
        if images != (1 if num_image_tokens else 0):
            raise ValueError(f'{where}: the sample has {"an" if num_image_tokens else "no"} '
                             f'image but its conversation has {images} '
                             f'{self.image_placeholder!r} placeholder(s)')
        if len(ids) > self.max_length:
            if for_generation:
                raise ValueError(f'{where}: the prompt has {len(ids)} tokens, more than '
                                 f'model.max_length={self.max_length}')
            ids, labels = self._truncate(ids, labels, where)
        return ids, labels

    def _truncate(self, ids: list[int], labels: list[int], where: str):
        cut = self.max_length
        if ids[cut] == self.image_id and ids[cut - 1] == self.image_id:
            raise ValueError(f'{where}: the image run does not fit in model.max_length='
                             f'{self.max_length}')
        # Never cut inside a routing run: drop the whole phrase instead.
        for token, n in self.routing.items():
            rid = self.routing_ids[token]
            for p in range(max(0, cut - n - 1), cut):
                if ids[p] == rid and p + n + 1 > cut:
                    cut = p
                    break
        self.num_truncated += 1
        print_log(f'{where}: {len(ids)} tokens cut to {cut} (model.max_length='
                  f'{self.max_length}); {self.num_truncated} samples truncated so far',
                  logger='current', level=30)
        return ids[:cut], labels[:cut]

    # ---- a batch -----------------------------------------------------------------------
    def pad(self, seqs: list[list[int]], value: int, left: bool, device=None) -> Tensor:
        """Pad to the longest sequence, on the left for generation, on the right otherwise."""
        return pad_sequence([torch.tensor(x, dtype=torch.long) for x in seqs], batch_first=True,
                            padding_value=value, padding_side='left' if left else 'right'
                            ).to(device)

    def batch(self, conversations: list, num_image_tokens: list[int], for_generation: bool,
              wheres: list[str], device=None) -> dict[str, Tensor]:
        """``input_ids``, ``attention_mask`` and (unless generating) ``labels`` of a batch."""
        enc = [self.encode(c, n, for_generation, w)
               for c, n, w in zip(conversations, num_image_tokens, wheres)]
        ids = [e[0] for e in enc]
        out = dict(input_ids=self.pad(ids, self.pad_id, for_generation, device),
                   attention_mask=self.pad([[1] * len(i) for i in ids], 0, for_generation,
                                           device))
        if not for_generation:
            out['labels'] = self.pad([e[1] for e in enc], IGNORE_INDEX, False, device)
        return out
