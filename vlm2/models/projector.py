"""The MLP projector from vision features to the LLM's embedding space."""
from torch import Tensor, nn

from vlm2.registry import MODELS


@MODELS.register_module()
class MLPProjector(nn.Sequential):
    """``depth`` linear layers with GELU between them (paper: 2 layers, as in LLaVA-1.5).

    Written by hand because transformers' ``LlavaMultiModalProjector`` needs a whole
    ``LlavaConfig`` to build; the module itself is the same.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 2) -> None:
        layers: list[nn.Module] = [nn.Linear(in_channels, out_channels)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_channels, out_channels)]
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
