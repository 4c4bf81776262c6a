from .inference import build_inference_pipeline, inference, init_model
from .visualize import draw_prediction

__all__ = ['init_model', 'inference', 'build_inference_pipeline', 'draw_prediction']
