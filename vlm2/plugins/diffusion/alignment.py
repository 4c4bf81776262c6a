"""A contrastive alignment loss between the super link's condition and the text encoder's."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ContrastiveAlignment(nn.Module):
    """InfoNCE, token by token, between conditions and their captions' text embeddings.

    The paper aligns the condition with the frozen text encoder's embedding of the caption by
    mean square. Most of that embedding is the same for every caption (its template words,
    position embeddings, padding), so a condition can come close in mean square while the few
    tokens that tell captions apart (a shape's kind, its place) are still an average of their
    possible words, which a frozen UNet cannot draw. Here each of a condition's tokens must be
    nearer its own caption's token than the same token of the captions in a queue of recent
    ones (MoCo's queue, He et al. 2020, as a training batch holds only a few captions):
    where captions agree the loss has no gradient, where they differ it has all of it.

    The distance is the mean square over the channels; logits are its negative over
    ``temperature``. The queue holds the last ``queue_size`` targets (the encoder is frozen,
    so they stay valid) and is this module's buffer, so a checkpoint carries it.
    """

    def __init__(self, num_tokens: int, width: int, queue_size: int = 256,
                 temperature: float = 0.1) -> None:
        super().__init__()
        if queue_size < 1 or temperature <= 0:
            raise ValueError(f'queue_size must be ≥ 1 and temperature > 0, got {queue_size} '
                             f'and {temperature}')
        self.temperature = temperature
        self.register_buffer('queue', torch.zeros(queue_size, num_tokens, width))
        self.register_buffer('seen', torch.zeros((), dtype=torch.long))  # targets enqueued

    @property
    def filled(self) -> int:
        """How many rows of the queue hold a target."""
        return min(self.queue.shape[0], int(self.seen))

    @property
    def ptr(self) -> int:
        """The row the next target goes to."""
        return int(self.seen) % self.queue.shape[0]

    def forward(self, cond: Tensor, target: Tensor) -> Tensor:
        """The mean over samples and tokens of the cross-entropy of ``cond`` (B, T, W) against
        its ``target`` (B, T, W) among the batch's other targets and the queue's; then the
        batch's targets enter the queue."""
        target = target.detach().to(cond.dtype)
        negatives = self.queue[:self.filled].to(cond.dtype)
        keys = torch.cat([target, negatives])  # (B + Q, T, W); sample i's key is row i
        # (B, T, B + Q) mean squares, by ||c||² - 2 c·k + ||k||² to keep memory at B·T·(B+Q)
        dist = (cond.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum('btw,ktw->btk', cond, keys)
                + keys.pow(2).sum(-1).T[None]) / cond.shape[-1]
        labels = torch.arange(cond.shape[0], device=cond.device)[:, None].expand(
            -1, cond.shape[1])
        loss = F.cross_entropy((-dist / self.temperature).flatten(0, 1).float(),
                               labels.flatten())
        if self.training:
            self._enqueue(target)
        return loss

    @torch.no_grad()
    def _enqueue(self, target: Tensor) -> None:
        size = self.queue.shape[0]
        skipped = max(0, len(target) - size)  # a batch larger than the queue keeps its last
        idx = (self.ptr + skipped + torch.arange(len(target) - skipped)) % size
        self.queue[idx.to(self.queue.device)] = target[skipped:].to(self.queue.dtype)
        self.seen += len(target)
