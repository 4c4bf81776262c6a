"""Colour-mapped depth pictures."""
import cv2
import numpy as np


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """RGB uint8 picture of a depth map (metres): inverse depth through OpenCV's magma map,
    so near is bright and far is dark (the usual depth-picture convention)."""
    inv = 1.0 / np.clip(depth, min_depth, max_depth)
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    scaled = np.uint8(np.round(255 * (inv - lo) / (hi - lo)))
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
