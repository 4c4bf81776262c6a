"""The super link: routing tokens, per-decoder query tables, and the hand-off to decoders."""
import re
from collections import defaultdict
from typing import Optional

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from vlm2.registry import MODELS
from vlm2.structures import LinkedPhrases, VLMDataSample
from .base_decoder import BaseTaskDecoder

ROUTING_TOKEN = re.compile(r'^\[[A-Z][A-Z0-9_]*\]$')


@MODELS.register_module()
class SuperLink(BaseModule):
    """Connects the LLM to the task decoders (paper §3.2).

    It builds the decoders of ``decoders=dict(name=cfg, ...)``, owns one query table per
    decoder (routing tokens of one decoder share it), replaces the input embeddings of the
    ``[EMB]`` placeholders after each routing token with that table, and gathers the last
    hidden states at those positions for the decoders, per sample and per phrase.

    Args:
        decoders: decoder configs by name; each is built with ``llm_hidden_size``.
        hidden_size: the LLM width.
        emb_token: the query placeholder token.
    """

    def __init__(self, decoders: dict, hidden_size: int, emb_token: str = '[EMB]',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.emb_token = emb_token
        self.decoders = nn.ModuleDict()
        self.queries = nn.ModuleDict()
        self.token_owner: dict[str, str] = {}
        for name, cfg in (decoders or {}).items():
            decoder = MODELS.build(cfg, default_args=dict(llm_hidden_size=hidden_size))
            key = f'model.super_link.decoders.{name}'
            if not isinstance(decoder, BaseTaskDecoder):
                raise TypeError(f'{key}: {type(decoder).__name__} is not a BaseTaskDecoder')
            if not isinstance(decoder.num_queries, int) or decoder.num_queries < 1:
                raise ValueError(f'{key}.num_queries: a decoder needs a query table of at least '
                                 f'one query, got {decoder.num_queries!r}')
            if not decoder.routing_tokens:
                raise ValueError(f'{key}.routing_tokens: a decoder must own a routing token')
            for token in decoder.routing_tokens:
                if not ROUTING_TOKEN.match(token) or token == emb_token:
                    raise ValueError(f'{key}.routing_tokens: {token!r} is not a routing token '
                                     '(upper case in brackets, e.g. "[DET]")')
                if token in self.token_owner:
                    raise ValueError(f'{key}.routing_tokens: {token} is already owned by '
                                     f'decoder {self.token_owner[token]!r}')
                self.token_owner[token] = name
            self.decoders[name] = decoder
            table = nn.Embedding(decoder.num_queries, hidden_size)
            nn.init.normal_(table.weight, std=0.02)
            self.queries[name] = table
        for name, decoder in self.decoders.items():
            for token in decoder.borrowed_tokens:
                if token not in self.token_owner:
                    raise ValueError(f'model.super_link.decoders.{name}.borrowed_tokens: '
                                     f'{token} is owned by no configured decoder; known routing '
                                     f'tokens: {sorted(self.token_owner)}')
        self._token_ids: dict[str, int] = {}

    # ---- set-up -------------------------------------------------------------------------
    @property
    def routing_tokens(self) -> list[str]:
        """The routing tokens in sorted order: the tokenizer gets their ids in this order, so
        the ids do not depend on the order of the config's decoders, which MMEngine's dumped
        config (``work_dir/<config>.py``) sorts by name."""
        return sorted(self.token_owner)

    def num_queries_of(self, token: str) -> int:
        """Length of the query run after ``token``."""
        return self.decoders[self.token_owner[token]].num_queries

    def bind_token_ids(self, token_ids: dict[str, int]) -> None:
        """Record the tokenizer ids of the routing tokens and ``[EMB]``; builds lookups."""
        self._token_ids = dict(token_ids)
        self.emb_id = token_ids[self.emb_token]
        size = max(token_ids.values()) + 1
        names = list(self.decoders)
        owner = torch.full((size,), -1, dtype=torch.long)
        run = torch.zeros(size, dtype=torch.long)
        for token, name in self.token_owner.items():
            owner[token_ids[token]] = names.index(name)
            run[token_ids[token]] = self.decoders[name].num_queries
        self.register_buffer('_owner_of_id', owner, persistent=False)
        self.register_buffer('_run_of_id', run, persistent=False)
        offsets = torch.tensor([0] + [d.num_queries for d in self.decoders.values()]).cumsum(0)
        self.register_buffer('_table_offset', offsets[:-1].clone(), persistent=False)
        self._id_to_token = {token_ids[t]: t for t in self.token_owner}

    def is_routing(self, input_ids: Tensor) -> Tensor:
        ids = input_ids.clamp(max=self._owner_of_id.numel() - 1)
        return (self._owner_of_id[ids] >= 0) & (input_ids < self._owner_of_id.numel())

    def run_length(self, input_ids: Tensor) -> Tensor:
        """Query-run length after each id (0 for non-routing ids)."""
        return torch.where(self.is_routing(input_ids),
                           self._run_of_id[input_ids.clamp(max=self._run_of_id.numel() - 1)], 0)

    def all_queries(self) -> Tensor:
        """The query tables of all decoders, concatenated in decoder order."""
        return torch.cat([q.weight for q in self.queries.values()])

    def query_rows(self, routing_ids: Tensor) -> list[Tensor]:
        """The query table rows that follow each routing id."""
        return [self.queries[self.token_owner[self._id_to_token[int(i)]]].weight
                for i in routing_ids]

    # ---- training and forced routing ------------------------------------------------------
    def embed_queries(self, input_ids: Tensor, inputs_embeds: Tensor) -> Tensor:
        """Replace the embeddings at ``[EMB]`` positions with the owning decoder's queries."""
        emb = input_ids == self.emb_id
        if not self.decoders or not emb.any():
            return inputs_embeds
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        route_pos = torch.where(self.is_routing(input_ids), pos, -1).cummax(dim=1).values
        start = route_pos.clamp(min=0)
        k = pos - start - 1
        route_id = input_ids.gather(1, start)
        bad = emb & ((route_pos < 0) | (k >= self.run_length(route_id)))
        if bad.any():
            b = int(bad.nonzero()[0, 0])
            raise ValueError(f'sample {b} of the batch has an {self.emb_token} that does not '
                             'follow a routing token within its decoder\'s query run')
        rows = self._table_offset[self._owner_of_id[route_id[emb]]] + k[emb]
        inputs_embeds = inputs_embeds.clone()
        inputs_embeds[emb] = self.all_queries()[rows].to(inputs_embeds.dtype)
        return inputs_embeds

    def gather(self, hidden: Tensor, input_ids: Tensor) -> list[list[tuple[str, Tensor, int]]]:
        """Per sample, ``(routing token, query states, position)`` of each phrase.

        Only routing tokens followed by their ``[EMB]`` run count (answers); a routing token
        quoted in a prompt is plain text.
        """
        found: list[list[tuple[str, Tensor, int]]] = [[] for _ in range(len(input_ids))]
        if not self.decoders:
            return found
        length = input_ids.shape[1]
        for b, p in self.is_routing(input_ids).nonzero().tolist():
            token = self._id_to_token[int(input_ids[b, p])]
            n = self.num_queries_of(token)
            run = input_ids[b, p + 1:p + 1 + n]
            if p + 1 >= length or int(input_ids[b, p + 1]) != self.emb_id:
                continue
            if len(run) < n or not bool((run == self.emb_id).all()):
                raise ValueError(f'sample {b} of the batch: {token} at position {p} is followed '
                                 f'by an incomplete run of {self.emb_token} (expected {n})')
            found[b].append((token, hidden[b, p + 1:p + 1 + n], p))
        return found

    def route(self, found: list[list[tuple[str, Tensor, int]]],
              names: Optional[list[list[str]]] = None) -> dict[str, dict[int, LinkedPhrases]]:
        """Group phrases by the decoder that takes them: ``{decoder: {sample: phrases}}``.

        A phrase goes to its token's owner, unless a decoder borrowing that token fired in
        the same sample, in which case the borrower takes it.
        """
        routed: dict[str, dict[int, LinkedPhrases]] = defaultdict(dict)
        for b, phrases in enumerate(found):
            fired = {self.token_owner[t] for t, _, _ in phrases}
            for i, (token, states, _) in enumerate(phrases):
                target = self.token_owner[token]
                for name in fired:
                    if token in self.decoders[name].borrowed_tokens:
                        target = name
                linked = routed[target].setdefault(b, LinkedPhrases())
                linked.tokens.append(token)
                linked.states.append(states)
                if names is not None:
                    linked.names.append(names[b][i])
        return routed

    def loss(self, hidden: Tensor, input_ids: Tensor,
             data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        """Decoder losses of a batch; idle decoders join the graph at zero weight."""
        losses: dict[str, Tensor] = {}
        routed = self.route(self.gather(hidden, input_ids))
        idle = []
        for name, decoder in self.decoders.items():
            if name not in routed:
                idle.append(decoder.dummy_loss() + self.queries[name].weight.sum() * 0.0)
                continue
            index = sorted(routed[name])
            out = decoder.loss([routed[name][b] for b in index], [data_samples[b] for b in index])
            losses.update({f'{name}.{k}': v for k, v in out.items()})
        if idle:
            losses['loss_idle'] = sum(idle)
        return losses

    def predict(self, routed: dict[str, dict[int, LinkedPhrases]],
                data_samples: list[VLMDataSample]) -> None:
        """Let each decoder that fired fill its prediction fields."""
        for name, by_sample in routed.items():
            index = sorted(by_sample)
            self.decoders[name].predict([by_sample[b] for b in index],
                                        [data_samples[b] for b in index])
