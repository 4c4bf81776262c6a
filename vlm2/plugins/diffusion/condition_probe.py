"""Does the super link's condition carry the caption's words? A probe for the benchmark.

A frozen UNet draws what its condition says, so when a generated picture has the asked colour
but not the asked kind, the first question is whether the condition carried the kind. This
compares the link's condition with the decoder's frozen text encoder's embedding of the same
text, token by token, where the texts differ.
"""
from typing import Optional

import torch
from torch import Tensor


class ConditionRecorder:
    """Records the condition and text of every prediction of a diffusion decoder (by
    wrapping its ``predict``), while an evaluation runs; :meth:`remove` undoes it."""

    def __init__(self, decoder) -> None:
        self.decoder = decoder
        self.conds: list[Tensor] = []
        self.texts: list[str] = []
        self._predict = decoder.predict
        decoder.predict = self._record  # an instance attribute shadows the method

    def _record(self, phrases, data_samples):
        handle = self.decoder.conditioner.register_forward_hook(
            lambda module, args, out: self.conds.append(out.detach().float().cpu()))
        try:
            out = self._predict(phrases, data_samples)
        finally:
            handle.remove()
        # the samples it drew for (an edit without an image to edit gets no condition)
        self.texts += [str(s.get(self.decoder.text_field, '')) for s in out
                       if s.get('pred_image') is not None]
        return out

    def remove(self) -> None:
        del self.decoder.predict

    def accuracy(self) -> Optional[dict]:
        """:func:`condition_accuracy` of what was recorded (None without a text encoder)."""
        if self.decoder.text_encoder is None or not self.conds:
            return None
        return condition_accuracy(torch.cat(self.conds), self.texts, self.decoder.text_encoder)


@torch.no_grad()
def condition_accuracy(cond: Tensor, texts: list[str], text_encoder) -> dict:
    """Token by token, whether each condition (N, T, W) is nearer (in mean square) its own
    text's embedding than any other embedding the ``texts`` have at that token.

    Only tokens where the texts differ are scored. Returns ``accuracy`` (their mean), and
    ``by_word``: the accuracy and count of each word of the texts at those tokens, keyed by
    the word (``'circle'``); so a condition that carries colours but not kinds shows it.
    """
    if len(cond) != len(texts):
        raise ValueError(f'{len(cond)} conditions for {len(texts)} texts')
    ids = text_encoder.tokenize(texts)
    target = text_encoder.embed(ids).float().cpu()
    hits: dict[str, list[bool]] = {}
    for t in range(target.shape[1]):
        keys, which = torch.unique(target[:, t], dim=0, return_inverse=True)
        if len(keys) < 2:
            continue
        dist = torch.cdist(cond[:, t], keys)  # the nearest in L2 is the nearest in MSE
        right = dist.argmin(1) == which
        words = text_encoder.tokenizer.convert_ids_to_tokens(ids[:, t].tolist())
        for w, r in zip(words, right.tolist()):
            hits.setdefault(w, []).append(r)
    every = [r for v in hits.values() for r in v]
    return dict(accuracy=sum(every) / max(len(every), 1), num_tokens=len(every),
                by_word={w: dict(accuracy=round(sum(v) / len(v), 3), num=len(v))
                         for w, v in sorted(hits.items())})
