"""Pictures of pose predictions through mmpose's ``PoseLocalVisualizer``."""
from typing import Optional

import numpy as np
from mmengine.structures import InstanceData

from .keypoint_sets import phrase_of


def _skeleton(category: dict, keypoint_names: list[str]) -> list[tuple[int, int]]:
    """The category's skeleton, re-indexed to the prompt's keypoint order (links whose ends
    the prompt did not ask for are left out)."""
    index = {n: i for i, n in enumerate(keypoint_names)}
    names = [phrase_of(n) for n in category['keypoints']['names']]
    return [(index[names[a]], index[names[b]]) for a, b in category['keypoints']['skeleton']
            if names[a] in index and names[b] in index]


def draw_pose(image: np.ndarray, pred: InstanceData, pose_eval: Optional[dict] = None,
              kpt_thr: float = 0.3, score_thr: float = 0.3) -> np.ndarray:
    """Boxes, keypoints and, where the data set defines one, the skeleton of each instance.

    ``image`` is RGB (h, w, 3); ``pose_eval`` (from the adapters) gives the categories'
    skeletons. Instances are drawn per category because each has its own skeleton.
    """
    from mmpose.structures import PoseDataSample
    from mmpose.visualization import PoseLocalVisualizer
    # the matplotlib backend: the opencv one fails on numpy 2 (int() of a 1-d radius array)
    vis = PoseLocalVisualizer(name='vlm2_pose', bbox_color='lime', kpt_color='red',
                              link_color='yellow', radius=2, line_width=1, backend='matplotlib')
    names = pred.metainfo['keypoint_names']
    by_name = {c['name']: c for c in (pose_eval or {}).get('categories', {}).values()}
    keep = (pred.scores >= score_thr).numpy()
    out = image.copy()
    for label in sorted(set(np.asarray(pred.label_names)[keep].tolist())):
        idx = [i for i in range(len(pred)) if keep[i] and pred.label_names[i] == label]
        category = by_name.get(label)
        vis.skeleton = _skeleton(category, names) if category else None
        vis.link_color = 'yellow' if vis.skeleton else None
        sample = PoseDataSample(pred_instances=InstanceData(
            keypoints=pred.keypoints[idx].numpy(),
            keypoint_scores=pred.keypoint_scores[idx].numpy(),
            keypoints_visible=pred.keypoint_scores[idx].numpy(),
            bboxes=pred.bboxes[idx].numpy()))
        vis.add_datasample('pose', out, sample, draw_gt=False, draw_bbox=True, kpt_thr=kpt_thr)
        out = vis.get_image()
    return out
