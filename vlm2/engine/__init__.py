from .visualization_hook import PredictionPictureHook

__all__ = ['PredictionPictureHook']
