"""Batched greedy generation in which routing tokens pull in their super-link queries."""
import inspect
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from .super_link import SuperLink

Found = list[tuple[str, Tensor, int]]


@torch.no_grad()
def generate_with_super_link(body: nn.Module,
                             lm_head: nn.Module,
                             embed_tokens: nn.Module,
                             super_link: SuperLink,
                             inputs_embeds: Tensor,
                             attention_mask: Tensor,
                             max_new_tokens: int,
                             eos_ids: set[int],
                             pad_id: int,
                             logits_processor: Optional[Callable[[list[list[int]], Tensor],
                                                                 Tensor]] = None,
                             query_bias: Optional[Callable[[int, list[int]],
                                                           Optional[Tensor]]] = None
                             ) -> tuple[list[list[int]], list[Found]]:
    """Greedy decoding with a KV cache, for a left-padded batch.

    When a sample emits a routing token, the token and its decoder's queries are fed in the
    next step, and the last hidden states at the query positions are kept for the decoder.
    Samples reach routing tokens at different steps: each step feeds a chunk of the same
    length to all samples, each sample's tokens first and its unused end masked out, and
    positions count only real tokens. transformers' sliding windows count cache slots, not
    positions, so with sliding-window layers the padding then moves to the front of each
    row (:func:`_compact`); attention stays exactly that of a per-sample run.
    ``query_bias(sample, its ids so far)`` may return a vector to add to the queries a
    routing token pulls in.

    Returns, per sample, the generated ids (no ``[EMB]``) and the phrases found as
    ``(routing token, query states, index of the token in the generated ids)``.
    """
    batch = inputs_embeds.shape[0]
    device = inputs_embeds.device
    cache = _cache(body.config, max((d.num_queries for d in super_link.decoders.values()),
                                    default=0))
    sliding = any(isinstance(layer, DynamicSlidingWindowLayer) for layer in cache.layers)
    mask = attention_mask
    # transformers renamed past_key_values to cache; accept both generations of models
    cache_arg = 'cache' if 'cache' in inspect.signature(body.forward).parameters \
        else 'past_key_values'

    def step(embeds: Tensor, chunk_mask: Optional[Tensor] = None) -> Tensor:
        nonlocal mask
        if chunk_mask is not None:
            mask = torch.cat([mask, chunk_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        return body(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                    use_cache=True, **{cache_arg: cache}).last_hidden_state

    last = step(inputs_embeds)[:, -1]  # the prompt is left-padded
    tokens: list[list[int]] = [[] for _ in range(batch)]
    found: list[Found] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        logits = lm_head(last).float()
        if logits_processor is not None:
            logits = logits_processor(tokens, logits)
        nxt = torch.where(done, torch.full_like(done, pad_id, dtype=torch.long),
                          logits.argmax(-1))
        ids = nxt.tolist()
        for b, was_done in enumerate(done.tolist()):
            if not was_done:
                tokens[b].append(ids[b])
        done = done | torch.tensor([i in eos_ids for i in ids], device=device)
        if done.all():
            break
        runs = torch.where(done, 0, super_link.run_length(nxt)) if super_link.decoders \
            else torch.zeros_like(nxt)
        width = 1 + int(runs.max())
        if width == 1 and t == max_new_tokens - 1:
            break  # the last token needs no forward pass unless it pulls in queries
        if width == 1:  # no routing token this step: one token per sample
            embeds = embed_tokens(nxt)[:, None]
            chunk_mask = (~done)[:, None].to(mask.dtype)
        else:
            first = embed_tokens(nxt)
            embeds = first.new_zeros(batch, width, first.shape[-1])
            embeds[:, 0] = first
            chunk_mask = torch.zeros(batch, width, dtype=mask.dtype, device=device)
            for b in range(batch):
                n = int(runs[b])
                chunk_mask[b, :n + 1] = 0 if done[b] else 1
                if n:
                    queries = super_link.query_rows(nxt[b:b + 1])[0]
                    bias = None if query_bias is None else query_bias(b, tokens[b])
                    if bias is not None:
                        queries = queries + bias
                    embeds[b, 1:n + 1] = queries.to(embeds.dtype)
        hidden = step(embeds, chunk_mask)
        last = hidden[torch.arange(batch, device=device), runs]  # each row's last real slot
        if width > 1 and sliding:
            mask = _compact(cache, mask)
        for b in runs.nonzero().flatten().tolist():
            n = int(runs[b])
            token = super_link._id_to_token[int(nxt[b])]
            found[b].append((token, hidden[b, 1:n + 1], len(tokens[b]) - 1))
    return tokens, found


def _cache(config, padding: int) -> DynamicCache:
    """transformers' cache for this LLM, built from its config as ``generate`` does, so
    sliding-window layers keep their window, not the whole sequence. Each keeps ``padding``
    slots more: a chunk may pad a row by that many before :func:`_compact` runs."""
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if isinstance(layer, DynamicSlidingWindowLayer):
            layer.sliding_window += padding
    return cache


def _compact(cache: DynamicCache, mask: Tensor) -> Tensor:
    """Move each row's masked slots to its front, in the mask and in every cached layer, so
    each sample's tokens stay contiguous and a sliding window of slots is one of positions.

    A sliding layer holds only the mask's last slots; sorting those alone leaves its first
    slots holding padding where the mask now says real tokens, but no more of them than the
    extra slots of :func:`_cache`, so they lie outside every later window."""
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer):
            raise NotImplementedError(
                'generation with routing tokens: cannot move the padding of a '
                f'{type(layer).__name__} cache layer; use full or sliding-window attention')
        if not layer.is_initialized:
            continue
        order = torch.sort(mask[:, -layer.keys.shape[-2]:], dim=1, stable=True).indices
        order = order[:, None, :, None]
        layer.keys = layer.keys.gather(2, order.expand_as(layer.keys))
        layer.values = layer.values.gather(2, order.expand_as(layer.values))
    return mask.gather(1, torch.sort(mask, dim=1, stable=True).indices)
