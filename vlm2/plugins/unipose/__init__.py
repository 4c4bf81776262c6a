"""Pose: keypoints of any category and any keypoint subset through the super link (UniPose)."""
from .adapters import (AP10KDataset, AnimalKingdomDataset, CocoKeypointsDataset,
                       CocoPoseDataset, CrowdPoseDataset, Face300WDataset, FlyDataset,
                       HumanArtDataset, LocustDataset, MacaquePoseDataset,
                       ShapesWorldPoseDataset)
from .criterion import KeypointL1Cost, KeypointOKSCost, PoseCriterion
from .decoder import ClassPhraseTable, UniPoseDecoder
from .metrics import PoseMetric
from .transforms import AskKeypoints, PoseTargets

__all__ = ['UniPoseDecoder', 'ClassPhraseTable', 'PoseCriterion', 'KeypointL1Cost',
           'KeypointOKSCost', 'PoseMetric', 'PoseTargets', 'AskKeypoints',
           'CocoKeypointsDataset', 'CocoPoseDataset', 'AP10KDataset', 'CrowdPoseDataset',
           'HumanArtDataset', 'MacaquePoseDataset', 'AnimalKingdomDataset', 'Face300WDataset',
           'LocustDataset', 'FlyDataset', 'ShapesWorldPoseDataset']
