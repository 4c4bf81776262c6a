"""Monocular depth estimation, [DEPTH]: a task the paper did not have, dropped in as a folder."""
from .adapters import NYUDepthDataset
from .decoder import DepthDecoder
from .hooks import TrainTimeLimitHook
from .metrics import DepthMetric, depth_errors
from .synthetic import generate_depth_shapes
from .transforms import LoadDepthInputs, read_depth

__all__ = ['NYUDepthDataset', 'DepthDecoder', 'DepthMetric', 'depth_errors',
           'generate_depth_shapes', 'LoadDepthInputs', 'read_depth', 'TrainTimeLimitHook']
