"""Chat, VQA and captioning: a text-only plugin (no decoder)."""
from .adapters import VQADataset, VQAv2Dataset
from .metrics import VQAMetric, normalize_answer, vqa_accuracy

__all__ = ['VQADataset', 'VQAv2Dataset', 'VQAMetric', 'normalize_answer', 'vqa_accuracy']
