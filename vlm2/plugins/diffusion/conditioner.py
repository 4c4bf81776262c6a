"""The super link's query states → the UNet's conditioning sequence (paper §3.3)."""
import torch
from torch import Tensor, nn


class SuperLinkConditioner(nn.Module):
    """Maps the ``N`` query states of a [GEN]/[EDIT] phrase to ``num_tokens`` × ``width``.

    Paper: Linear(LLM width → 768), GELU, Linear(768 → 768), then a transformer of one
    encoder and one decoder layer (d = 768) whose ``num_tokens`` = 77 learnable queries
    read the projected states; the output replaces CLIP's text embeddings as the UNet's
    ``encoder_hidden_states``. ``width`` follows the UNet's ``cross_attention_dim``.
    torch's ``nn.Transformer`` is that encoder-decoder, so it is reused as is.

    Classifier-free guidance needs an unconditional sequence: :attr:`null` is a learned
    ``num_tokens`` × ``width`` embedding (initialised at zero), used when the condition is
    dropped in training and for the unconditional pass at inference.

    ``final_norm=False`` drops the decoder's final LayerNorm (the layers are pre-norm), so
    the output can be zero at some tokens, as a text encoder with ``zero_padding`` is past
    the caption's end; a LayerNorm's output cannot be zero at some tokens and not at others.
    """

    def __init__(self, llm_hidden_size: int, width: int, num_tokens: int = 77,
                 num_heads: int = 8, ffn_ratio: int = 4, final_norm: bool = True) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f'conditioner.num_heads={num_heads} must divide the UNet\'s '
                             f'cross_attention_dim {width}')
        self.proj = nn.Sequential(nn.Linear(llm_hidden_size, width), nn.GELU(),
                                  nn.Linear(width, width))
        self.transformer = nn.Transformer(
            d_model=width, nhead=num_heads, num_encoder_layers=1, num_decoder_layers=1,
            dim_feedforward=ffn_ratio * width, dropout=0.0, batch_first=True, norm_first=True)
        if not final_norm:
            self.transformer.decoder.norm = nn.Identity()
        self.queries = nn.Parameter(torch.randn(num_tokens, width) * 0.02)
        self.null = nn.Parameter(torch.zeros(num_tokens, width))

    def forward(self, states: Tensor) -> Tensor:
        """(B, N, llm_hidden) query states → (B, num_tokens, width)."""
        memory = self.proj(states)
        queries = self.queries.to(memory.dtype).expand(states.shape[0], -1, -1)
        return self.transformer(memory, queries)

    def unconditional(self, batch: int) -> Tensor:
        """The learned null condition, (batch, num_tokens, width)."""
        return self.null.expand(batch, -1, -1)
