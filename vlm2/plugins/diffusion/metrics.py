"""Metrics of generation and editing: ShapesWorld's analyser, CLIP score and FID."""
import importlib.util
import os.path as osp
from collections import defaultdict
from typing import Optional

import numpy as np
import torch
from mmengine.logging import print_log

from vlm2.evaluation import TaskMetric
from vlm2.registry import METRICS
from .analyser import analyse_image, check_edit, check_generation, parse_objects
from .transforms import square_image

#: The requirements line that enables CLIP score and FID (the image extra brings
#: torch-fidelity, whose InceptionV3 FID uses; CLIPScore uses transformers).
TORCHMETRICS_REQUIREMENT = 'torchmetrics[image]'


def _hwc(image) -> np.ndarray:
    """A (3, H, W) tensor or an H×W×3 array → uint8 H×W×3."""
    arr = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0


@METRICS.register_module()
class ShapesGenerationMetric(TaskMetric):
    """Generation faithfulness and edit accuracy on ShapesWorld, read back by the analyser
    (:mod:`vlm2.plugins.diffusion.analyser`), not eyeballed.

    * Text-to-image (``gen_tasks``): a sample is faithful when every object its caption
      names is found with its colour and kind, roughly at its place. Also reported:
      per-attribute hit rates, and the analyser's score of the reference images (its own
      ceiling on clean pictures).
    * Editing (``edit_tasks``): a sample is correct when the analyser finds in the edited
      image exactly the shapes it finds in the reference target (colour, kind, centre within
      ``edit_tol``), per edit type as well. An added shape is checked at its asked place
      (``add_place='cell'``: inside the asked grid cell grown by ``place_margin``, as a
      caption's object is), since where in the cell the reference drew it is a random draw
      the instruction does not give; ``add_place='reference'`` checks it against the
      reference centroid too (the stricter rule before 5 Dec 2026's twentieth session).

    A sample without ``pred_image`` (the routing token was not generated) counts as wrong
    and is counted in ``*_no_image``.
    """

    default_prefix = 'shapes'

    def __init__(self, gen_tasks=('gen',), edit_tasks=('edit',), place_margin: float = 0.1,
                 edit_tol: float = 0.15, add_place: str = 'cell', **kwargs) -> None:
        if add_place not in ('cell', 'reference'):
            raise ValueError(f"ShapesGenerationMetric: add_place must be 'cell' or "
                             f"'reference', got {add_place!r}")
        self.gen_tasks, self.edit_tasks = tuple(gen_tasks), tuple(edit_tasks)
        super().__init__(tasks=self.gen_tasks + self.edit_tasks, **kwargs)
        self.place_margin, self.edit_tol, self.add_place = place_margin, edit_tol, add_place

    def process_sample(self, sample: dict) -> dict:
        pred = sample.get('pred_image')
        ref = sample.get('target_image')
        ref = None if ref is None else _hwc(ref)
        if pred is not None:
            pred = _hwc(pred)
            if ref is not None and pred.shape != ref.shape:
                pred = square_image(pred, ref.shape[0])
        if sample['task'] in self.gen_tasks:
            asked = parse_objects(sample.get('caption', ''))
            if not asked:
                raise ValueError(f'ShapesGenerationMetric: sample {sample.get("sample_id")} '
                                 f'has no ShapesWorld objects in its caption '
                                 f'{sample.get("caption")!r}')
            out = dict(kind='gen', no_image=pred is None)
            res = check_generation(analyse_image(pred), asked, self.place_margin) \
                if pred is not None else dict(faithful=False, asked=len(asked), color=0,
                                              kind=0, place=0, extra=0)
            out.update({f'gen_{k}': v for k, v in res.items()})
            if ref is not None:
                out['ref_faithful'] = check_generation(analyse_image(ref), asked,
                                                       self.place_margin)['faithful']
            return out
        if ref is None:
            raise ValueError(f'ShapesGenerationMetric: edit sample {sample.get("sample_id")} '
                             'has no target_image (LoadDiffusionImages in the val pipeline)')
        added = None
        if pred is not None and sample.get('edit_type') == 'add' and self.add_place == 'cell':
            asked = parse_objects(sample.get('instruction', ''))
            if not asked:
                raise ValueError(f'ShapesGenerationMetric: addition {sample.get("sample_id")} '
                                 f'names no ShapesWorld object in its instruction '
                                 f'{sample.get("instruction")!r}')
            added = asked[0]
        correct = pred is not None and check_edit(
            analyse_image(pred), analyse_image(ref), self.edit_tol, added,
            self.place_margin)['correct']
        return dict(kind='edit', no_image=pred is None, correct=correct,
                    edit_type=sample.get('edit_type', 'all'))

    def compute_metrics(self, results: list) -> dict:
        gen = [r for r in results if r['kind'] == 'gen']
        edit = [r for r in results if r['kind'] == 'edit']
        if not results:
            print_log(f'ShapesGenerationMetric: no samples of tasks {self.tasks} were '
                      'evaluated', logger='current', level=30)
            return {}
        metrics = {}
        if gen:
            asked = sum(r['gen_asked'] for r in gen)
            metrics.update(
                gen_faithfulness=_mean(r['gen_faithful'] for r in gen),
                gen_color=sum(r['gen_color'] for r in gen) / asked,
                gen_kind=sum(r['gen_kind'] for r in gen) / asked,
                gen_place=sum(r['gen_place'] for r in gen) / asked,
                gen_extra_shapes=_mean(r['gen_extra'] for r in gen),
                gen_no_image=sum(r['no_image'] for r in gen), gen_num=len(gen))
            refs = [r['ref_faithful'] for r in gen if 'ref_faithful' in r]
            if refs:
                metrics['gen_reference_faithfulness'] = _mean(refs)
        if edit:
            metrics.update(edit_accuracy=_mean(r['correct'] for r in edit),
                           edit_no_image=sum(r['no_image'] for r in edit), edit_num=len(edit))
            by_type = defaultdict(list)
            for r in edit:
                by_type[r['edit_type']].append(r['correct'])
            metrics.update({f'edit_accuracy_{t}': _mean(v) for t, v in sorted(by_type.items())})
        print_log('ShapesGenerationMetric: ' + ', '.join(
            f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}' for k, v in metrics.items()),
            logger='current')
        return metrics


def shapes_scores(samples: list[dict], **kwargs) -> dict:
    """``ShapesGenerationMetric(**kwargs)`` on ``samples`` outside a runner (the pretraining
    and reference scripts): its results without the ``shapes/`` prefix, rounded to 3 places."""
    metric = ShapesGenerationMetric(**kwargs)
    metric.process({}, samples)
    return {k.split('/')[-1]: round(float(v), 3)
            for k, v in metric.evaluate(len(samples)).items()}


def _missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


class _OptionalTorchMetric(TaskMetric):
    """A torchmetrics metric that needs local weights; skipped with a clear message (and no
    result keys) when the weights are not configured or torchmetrics is not installed."""

    what = ''
    needs: tuple[str, ...] = ('torchmetrics',)

    def __init__(self, weights: Optional[str], key: str, tasks=('gen',), **kwargs) -> None:
        super().__init__(tasks=tasks, **kwargs)
        self.skip_reason = None
        if not weights:
            self.skip_reason = f'no {key} configured'
        elif not osp.exists(weights):
            raise FileNotFoundError(f'{type(self).__name__}.{key}: {weights!r} does not exist '
                                    '(weights are read from local paths only)')
        elif _missing(self.needs):
            self.skip_reason = (f'{", ".join(_missing(self.needs))} not installed (add '
                                f'"{TORCHMETRICS_REQUIREMENT}" to requirements/runtime.txt)')
        if self.skip_reason:
            print_log(f'{type(self).__name__}: {self.what} is skipped: {self.skip_reason}',
                      logger='current', level=30)
        self.weights = weights

    def process_sample(self, sample: dict) -> dict:
        if self.skip_reason or sample.get('pred_image') is None:
            return {}
        ref = sample.get('target_image')
        return dict(pred=_hwc(sample['pred_image']), caption=sample.get('caption', ''),
                    ref=None if ref is None else _hwc(ref))

    def compute_metrics(self, results: list) -> dict:
        if self.skip_reason:
            print_log(f'{type(self).__name__}: {self.what} skipped: {self.skip_reason}',
                      logger='current', level=30)
            return {}
        results = [r for r in results if r]
        if not results:
            return {}
        return self.score(results)

    def score(self, results: list) -> dict:
        raise NotImplementedError


@METRICS.register_module()
class CLIPScoreMetric(_OptionalTorchMetric):
    """CLIP score of generated images against their captions (torchmetrics' ``CLIPScore``),
    with the CLIP model read from a local folder (``clip_model``)."""

    default_prefix = 'gen'
    what = 'CLIP score'

    def __init__(self, clip_model: Optional[str] = None, **kwargs) -> None:
        super().__init__(clip_model, 'clip_model', **kwargs)

    def score(self, results: list) -> dict:
        from torchmetrics.multimodal.clip_score import CLIPScore
        metric = CLIPScore(model_name_or_path=self.weights)
        for r in results:
            metric.update(torch.from_numpy(r['pred']).permute(2, 0, 1), r['caption'])
        return dict(clip_score=float(metric.compute()))


@METRICS.register_module()
class FIDMetric(_OptionalTorchMetric):
    """FID between generated images and the reference targets (torchmetrics'
    ``FrechetInceptionDistance``), InceptionV3 features from a local weights file
    (``inception_weights``, the FID Inception checkpoint torchmetrics reads)."""

    default_prefix = 'gen'
    what = 'FID'
    needs = ('torchmetrics', 'torch_fidelity')

    def __init__(self, inception_weights: Optional[str] = None, feature: int = 2048,
                 **kwargs) -> None:
        super().__init__(inception_weights, 'inception_weights', **kwargs)
        self.feature = feature

    def score(self, results: list) -> dict:
        from torchmetrics.image.fid import FrechetInceptionDistance
        metric = FrechetInceptionDistance(feature=self.feature,
                                          feature_extractor_weights_path=self.weights)
        for r in results:
            if r['ref'] is None:
                raise ValueError('FIDMetric needs target_image (the real images) on samples')
            metric.update(torch.from_numpy(r['ref']).permute(2, 0, 1)[None], real=True)
            metric.update(torch.from_numpy(r['pred']).permute(2, 0, 1)[None], real=False)
        return dict(fid=float(metric.compute()))
