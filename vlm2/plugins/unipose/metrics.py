"""Pose metrics: OKS AP through mmpose's CocoMetric, and PCK@0.2.

Predictions are named by the prompt's phrases: each instance by its class phrase, each
keypoint by its keypoint phrase. They are mapped back to the data set's categories and to each
category's keypoint order before scoring. A data set whose categories have different keypoint
sets (ShapesWorld) is scored per category, each with its own sigmas, and AP is the mean over
the categories that have ground truth (as mmdet averages over classes).
"""
import contextlib
import io
import tempfile
from collections import defaultdict
from typing import Sequence, Union

import numpy as np
from mmengine.logging import MMLogger, print_log
from mmpose.evaluation import CocoMetric
from mmpose.evaluation.functional import keypoint_pck_accuracy

from vlm2.evaluation import TaskMetric
from vlm2.registry import METRICS
from .keypoint_sets import phrase_of


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (n, 4) and b (m, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-6)


@METRICS.register_module()
class PoseMetric(TaskMetric):
    """OKS AP (mmpose ``CocoMetric``, the data set's sigmas) and PCK@``pck_thr``.

    Reads ``pred_pose`` (the decoder's) and ``pose_eval`` (the adapters'). OKS AP is computed
    for data sets whose adapter says ``metric='oks'``; PCK for all, normalised by the longer
    side of the ground-truth box, each ground-truth instance taking the same-class prediction
    that overlaps it most (an unmatched instance misses all its keypoints).

    Args:
        tasks: the task families scored (default ``'pose'``).
        pck_thr: the PCK threshold.
        nms_thr: CocoMetric's OKS-NMS threshold.
    """
    default_prefix = 'pose'

    def __init__(self, tasks: Union[str, Sequence[str]] = 'pose', pck_thr: float = 0.2,
                 nms_thr: float = 0.9, **kwargs) -> None:
        super().__init__(tasks=tasks, **kwargs)
        self.pck_thr = pck_thr
        self.nms_thr = nms_thr
        self.num_unrouted = 0

    def process_sample(self, sample: dict) -> dict:
        pred = sample.get('pred_pose')
        if pred is None:  # the reply routed nothing to the pose decoder: no instances
            self.num_unrouted += 1
            return dict(eval=sample['pose_eval'], pred=dict(
                bboxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                label_names=[], keypoints=np.zeros((0, 0, 2), np.float32),
                keypoint_scores=np.zeros((0, 0), np.float32), keypoint_names=[]))
        return dict(eval=sample['pose_eval'], pred=dict(
            bboxes=_np(pred['bboxes']), scores=_np(pred['scores']),
            label_names=list(pred['label_names']), keypoints=_np(pred['keypoints']),
            keypoint_scores=_np(pred['keypoint_scores']),
            keypoint_names=list(pred['keypoint_names'])))

    # ---- mapping predictions to categories -------------------------------------------------
    @staticmethod
    def _by_category(result: dict) -> tuple[dict, int]:
        """Per category id: keypoints (n, K, 2), keypoint scores (n, K), scores, boxes in the
        category's keypoint order; and the count of instances whose class is no category."""
        cats = result['eval']['categories']
        by_name = {c['name']: int(cid) for cid, c in cats.items()}
        pred = result['pred']
        index = {n: i for i, n in enumerate(pred['keypoint_names'])}
        out, unknown = {}, 0
        for cid, cat in cats.items():
            names = [phrase_of(n) for n in cat['keypoints']['names']]
            sel = [i for i, n in enumerate(pred['label_names']) if by_name.get(n) == int(cid)]
            kpts = np.zeros((len(sel), len(names), 2), np.float32)
            kscores = np.zeros((len(sel), len(names)), np.float32)
            for j, name in enumerate(names):
                if name in index:
                    kpts[:, j] = pred['keypoints'][sel, index[name]]
                    kscores[:, j] = pred['keypoint_scores'][sel, index[name]]
            out[int(cid)] = dict(keypoints=kpts, keypoint_scores=kscores,
                                 scores=pred['scores'][sel], bboxes=pred['bboxes'][sel])
        unknown = sum(1 for n in pred['label_names'] if n not in by_name)
        return out, unknown

    # ---- scores ----------------------------------------------------------------------------
    def _oks_ap(self, name: str, results: list[dict], mapped: list[dict]) -> dict:
        cats = results[0]['eval']['categories']
        aps, ap50s, out = [], [], {}
        for cid, cat in cats.items():
            cid = int(cid)
            gts = [[a for a in r['eval']['anns'] if int(a['category_id']) == cid]
                   for r in results]
            if not any(gts):
                continue
            k = len(cat['keypoints']['names'])
            metric = CocoMetric(use_area=True, iou_type='keypoints', nms_thr=self.nms_thr,
                                outfile_prefix=None)
            metric.dataset_meta = dict(dataset_name=f'{name}_{cid}', num_keypoints=k,
                                       sigmas=np.asarray(cat['keypoints']['sigmas']),
                                       CLASSES=[dict(id=cid, name=cat['name'])])
            samples = []
            for r, m, anns in zip(results, mapped, gts):
                p = m[cid]
                samples.append(dict(
                    # a list id marks bottom-up output: CocoMetric then keeps every instance
                    id=[r['eval']['img_id']], img_id=r['eval']['img_id'], category_id=cid,
                    ori_shape=(r['eval']['height'], r['eval']['width']), gt_instances={},
                    raw_ann_info=anns, pred_instances=dict(
                        keypoints=p['keypoints'], keypoint_scores=p['keypoint_scores'],
                        bbox_scores=p['scores'], bboxes=p['bboxes'])))
            metric.process([], samples)
            if not any(len(m[cid]['scores']) for m in mapped):
                ap, ap50 = 0.0, 0.0  # nothing predicted for this class: COCOeval cannot load
            else:
                # xtcocotools prints its tables; they go to the log as debug, not to stdout
                with tempfile.TemporaryDirectory() as tmp, \
                        contextlib.redirect_stdout(io.StringIO()) as text:
                    metric.outfile_prefix = f'{tmp}/{name}_{cid}'
                    stats = metric.compute_metrics(metric.results)
                print_log(text.getvalue(), logger='current', level=10)
                ap, ap50 = stats['AP'], stats['AP .5']
            out[f'{name}/AP_{cat["name"].replace(" ", "_")}'] = ap
            aps.append(ap)
            ap50s.append(ap50)
        out[f'{name}/AP'] = float(np.mean(aps)) if aps else 0.0
        out[f'{name}/AP50'] = float(np.mean(ap50s)) if ap50s else 0.0
        return out

    def _pck(self, name: str, results: list[dict], mapped: list[dict]) -> dict:
        hits, total = 0.0, 0
        for r, m in zip(results, mapped):
            for ann in r['eval']['anns']:
                if ann.get('iscrowd', 0):
                    continue
                gt = np.asarray(ann['keypoints'], np.float32).reshape(-1, 3)
                mask = gt[:, 2] > 0
                if not mask.any():
                    continue
                x, y, w, h = ann['bbox']
                p = m[int(ann['category_id'])]
                total += int(mask.sum())
                if not len(p['scores']):
                    continue
                iou = _box_iou(np.array([[x, y, x + w, y + h]], np.float32), p['bboxes'])[0]
                best = int(iou.argmax())
                _, acc, cnt = keypoint_pck_accuracy(
                    p['keypoints'][best:best + 1], gt[None, :, :2], mask[None], self.pck_thr,
                    np.array([[max(w, h), max(w, h)]], np.float32))
                hits += acc * cnt
        return {f'{name}/PCK@{self.pck_thr}': hits / total if total else 0.0}

    def compute_metrics(self, results: list) -> dict:
        logger = MMLogger.get_current_instance()
        groups = defaultdict(list)
        for r in results:
            groups[r['eval']['dataset']].append(r)
        metrics = {}
        if self.num_unrouted:
            print_log(f'PoseMetric: {self.num_unrouted} samples got no pose prediction (their '
                      'reply had no keypoint phrase); scored as no instances',
                      logger=logger, level=30)
            self.num_unrouted = 0
        for name, rs in groups.items():
            mapped, unknown = zip(*[self._by_category(r) for r in rs])
            if sum(unknown):
                print_log(f'PoseMetric {name}: {sum(unknown)} predicted instances whose class '
                          'phrase names no category of the data set were not scored',
                          logger=logger, level=30)
            if rs[0]['eval']['metric'] == 'oks':
                metrics.update(self._oks_ap(name, rs, list(mapped)))
            metrics.update(self._pck(name, rs, list(mapped)))
        return metrics
