"""Pictures of a prediction: the decoders' drawings plus the reply as a caption."""
import textwrap
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from vlm2.structures import VLMDataSample


def draw_prediction(model, image: Optional[np.ndarray], sample: VLMDataSample,
                    width: int = 384) -> np.ndarray:
    """An RGB picture: the image with what each decoder drew, and the reply under it.

    Each decoder that wrote predictions draws them itself (``BaseTaskDecoder.draw``);
    text-only replies show the image with the question and reply as a caption.
    """
    canvas = np.full((width, width, 3), 255, np.uint8) if image is None else image
    for decoder in model.super_link.decoders.values():
        drawn = decoder.draw(canvas, sample)
        if drawn is not None:
            canvas = drawn
    pic = Image.fromarray(canvas).convert('RGB')
    scale = width / pic.width
    pic = pic.resize((width, max(1, round(pic.height * scale))), Image.NEAREST)
    question = next((t['value'] for t in reversed(sample.conversation)
                     if t.get('from') == 'human'), '').replace('<image>', '').strip()
    lines = textwrap.wrap(f'Q: {question}', 60) + textwrap.wrap(
        f'A: {sample.get("pred_text", "")}', 60)
    out = Image.new('RGB', (width, pic.height + 14 * len(lines) + 8), 'white')
    out.paste(pic, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, pic.height + 4 + 14 * i), line, fill=(0, 0, 0))
    return np.asarray(out)
