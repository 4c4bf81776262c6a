"""How a generated image leaves a diffusion decoder: its JSON result and its drawing."""
import base64
from typing import Optional

import cv2
import numpy as np

from vlm2.structures import VLMDataSample
from .transforms import square_image


class ImageResults:
    """``format_results`` and ``draw`` of a decoder that writes ``pred_image`` (uint8
    H×W×3 RGB); it reads the decoder's ``routing_tokens``, ``test_cfg`` and ``uses_source``."""

    def format_results(self, data_sample: VLMDataSample) -> dict:
        """The task, size, steps and seed of the image, and the image as a base64 PNG."""
        img = data_sample.get('pred_image')
        if img is None:
            return {}
        ok, png = cv2.imencode('.png', cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))
        return dict(task=self.routing_tokens[0], size=list(img.shape[:2]),
                    num_steps=self.test_cfg['num_steps'], seed=self.test_cfg['seed'],
                    png_base64=base64.b64encode(png.tobytes()).decode('ascii') if ok else None)

    def draw(self, image: np.ndarray, data_sample: VLMDataSample) -> Optional[np.ndarray]:
        """The generated image (for edits: the source, then the edited image)."""
        img = data_sample.get('pred_image')
        if img is None:
            return None
        img = np.asarray(img)
        if not self.uses_source or image is None:
            return img
        src = square_image(np.asarray(image), img.shape[0])
        gap = np.full((img.shape[0], max(2, img.shape[0] // 16), 3), 255, np.uint8)
        return np.concatenate([src, gap, img], axis=1)
