"""The contract every task decoder implements (see docs/plugins.md)."""
from abc import ABCMeta, abstractmethod
from typing import Optional, Sequence

import numpy as np
from mmengine.model import BaseModule
from torch import Tensor

from vlm2.structures import LinkedPhrases, VLMDataSample


class BaseTaskDecoder(BaseModule, metaclass=ABCMeta):
    """A task decoder driven by the super link.

    A decoder declares which routing tokens it owns and how many super-link queries follow each
    of them; the :class:`~vlm2.models.SuperLink` owns one query table per decoder, inserts
    the queries after those tokens and hands their last hidden states to :meth:`loss` and
    :meth:`predict`, grouped per sample as :class:`~vlm2.structures.LinkedPhrases`.

    Subclasses set, as class attributes or through ``__init__`` arguments:
        routing_tokens: tokens this decoder owns, e.g. ``('[DET]', '[SEG]', '[GRD]')``. They
            share this decoder's one query table.
        num_queries: length of the query run after each routing token (paper: 4 for
            perception, 64 for generation).
        borrowed_tokens: tokens owned by another decoder whose phrases this decoder takes
            when one of its own tokens appears in the same sample (a pose prompt's class
            phrases carry ``[DET]`` but belong to the pose decoder). Their queries still come
            from the owner's table.
        reads / writes: the data-sample fields the decoder uses, for documentation and checks.

    The hidden states are not detached: decoder losses train the queries, the LLM and the
    projector.
    """

    routing_tokens: Sequence[str] = ()
    num_queries: int = 0
    borrowed_tokens: Sequence[str] = ()
    reads: Sequence[str] = ()
    writes: Sequence[str] = ()

    def __init__(self,
                 llm_hidden_size: int,
                 routing_tokens: Optional[Sequence[str]] = None,
                 num_queries: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.llm_hidden_size = llm_hidden_size
        if routing_tokens is not None:
            self.routing_tokens = tuple(routing_tokens)
        if num_queries is not None:
            self.num_queries = num_queries

    @abstractmethod
    def loss(self, phrases: list[LinkedPhrases],
             data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        """Losses of a batch of samples routed to this decoder.

        Args:
            phrases: per sample, its phrases routed here (with gradients to the LLM).
            data_samples: the same samples, with the targets the decoder reads.

        Returns:
            Named loss tensors; keys containing ``loss`` are summed into the total loss.
        """

    @abstractmethod
    def predict(self, phrases: list[LinkedPhrases],
                data_samples: list[VLMDataSample]) -> list[VLMDataSample]:
        """Fill the decoder's prediction fields of each sample and return the samples."""

    def dummy_loss(self) -> Tensor:
        """A zero-weighted loss that touches every trainable parameter.

        Used when a step has no samples for this decoder, so that distributed training sees
        the same graph on every rank. Override it to run a real (zero-weighted) forward where
        a strategy needs activations, not only parameters, in the graph.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(f'{type(self).__name__} has no trainable parameters')
        return sum(p.sum() for p in params) * 0.0

    def format_results(self, data_sample: VLMDataSample) -> dict:
        """JSON-serialisable predictions of this decoder for one sample (tools/infer.py)."""
        return {}

    def draw(self, image: np.ndarray, data_sample: VLMDataSample) -> Optional[np.ndarray]:
        """A picture of this decoder's predictions on ``image`` (RGB, HxWx3), or None."""
        return None
