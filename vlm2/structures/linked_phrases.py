"""What the super link hands to a decoder: the query states of each routed phrase."""
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LinkedPhrases:
    """The super-link phrases of one sample routed to one decoder, in text order.

    A phrase is one routing token with its run of queries, e.g. ``person[DET][EMB]x4``.

    Attributes:
        tokens: the routing token of each phrase (``'[DET]'``).
        states: per phrase, the last hidden states of its queries, shape (num_queries, hidden).
        names: per phrase, the text before its routing token (``'person'``); filled in
            prediction, where the text is generated, and empty in training.
    """
    tokens: list[str] = field(default_factory=list)
    states: list[Tensor] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, *tokens: str) -> Tensor:
        """Stack the states of the phrases whose routing token is one of ``tokens``.

        Returns a tensor of shape (num_selected, num_queries, hidden); all selected phrases
        must come from tables of one length.
        """
        chosen = [s for t, s in zip(self.tokens, self.states) if t in tokens]
        if not chosen:
            ref = self.states[0] if self.states else None
            shape = (0, 0, 0) if ref is None else (0, *ref.shape)
            return torch.zeros(shape) if ref is None else ref.new_zeros(shape)
        return torch.stack(chosen)
