"""The perception decoder: Grounding DINO driven by super-link phrase embeddings."""
import copy
import os.path as osp
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer.utils import MLP
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from torch import Tensor

from vlm2.models import BaseTaskDecoder
from vlm2.registry import MODELS
from vlm2.structures import LinkedPhrases, VLMDataSample
from . import mask_head  # noqa: F401  registers VLM2PhraseGroundingHead in mmdet's MODELS
from .detector import PhraseGroundingDINO

ROUTING_TOKENS = ('[DET]', '[SEG]', '[GRD]')


@MODELS.register_module()
class GroundingDINODecoder(BaseTaskDecoder):
    """Open-vocabulary detection, instance segmentation and grounding (paper §3.3).

    ``[DET]``, ``[SEG]`` and ``[GRD]`` share this decoder's one query table. For each phrase
    (class name, referring phrase), the last hidden states of its ``num_queries`` queries go
    through a 3-layer MLP (LLM width → D → D) and are averaged: that vector is the phrase's
    "text token" in Grounding DINO, where BERT's token features went. Classification is
    the contrastive dot product between object queries and these phrase embeddings; labels are
    phrase-slot indices (the order of the phrases in the answer).

    Reads ``det_inputs`` (the decoder's own image, uint8 (3, H, W)) and ``det_sample`` (an
    mmdet ``DetDataSample`` whose ``gt_instances.labels`` are phrase slots), both made by
    :class:`PackDecoderInputs`. Writes ``pred_instances`` (``bboxes`` xyxy in original
    pixels, ``scores``, ``labels`` = phrase slots, ``masks``, ``label_names``).

    Args:
        llm_hidden_size: the LLM width (given by the super link).
        detector: a :class:`PhraseGroundingDINO` config (mmdet Grounding DINO keys, without
            ``language_model``); its ``bbox_head.num_classes`` is the phrase capacity.
        max_per_img: k of the top-k over (query, phrase) scores; an int or a dict by task
            family with a ``'default'`` key (e.g. ``dict(default=100, rec=1, res=1)``).
        draw_score_thr: predictions below it are not drawn.
        detector_checkpoint: a local mmdet Grounding DINO checkpoint loaded into the detector
            after initialisation (its BERT and text_feat_map weights are unused).
        image_pipeline: transforms from ``img_path`` to ``det_inputs``/``det_sample``, used
            where a sample comes without them (``tools/infer.py``), e.g. ``[LoadImageFromFile,
            mmdet.Resize, PackDecoderInputs]``.
    """

    routing_tokens = ROUTING_TOKENS
    num_queries = 4
    reads = ('det_inputs', 'det_sample')
    writes = ('pred_instances',)

    def __init__(self, llm_hidden_size: int, detector: dict,
                 max_per_img: Union[int, dict] = 100, draw_score_thr: float = 0.3,
                 detector_checkpoint: Optional[str] = None,
                 image_pipeline: Optional[list] = None,
                 routing_tokens: Optional[tuple] = None, num_queries: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(llm_hidden_size, routing_tokens, num_queries, init_cfg)
        # mmdet's layers read their configs by attribute: make them ConfigDicts
        cfg = ConfigDict(copy.deepcopy(dict(detector)))
        cfg.pop('type', None)
        # mmdet's own modules are built from mmdet's registries, whatever the default scope.
        with DefaultScope.overwrite_default_scope('mmdet'):
            self.detector = PhraseGroundingDINO(**cfg)
        self.embed_dims = self.detector.embed_dims
        self.max_phrases = self.detector.bbox_head.max_text_len
        if self.detector.bbox_head.num_classes != self.max_phrases:
            raise ValueError('detector.bbox_head.num_classes (denoising label table) must equal '
                             f'contrastive_cfg.max_text_len ({self.max_phrases}): labels are '
                             'phrase slots')
        self.phrase_mlp = MLP(llm_hidden_size, self.embed_dims, self.embed_dims, 3)
        self.max_per_img = max_per_img if isinstance(max_per_img, dict) \
            else dict(default=max_per_img)
        self.draw_score_thr = draw_score_thr
        self.detector_checkpoint = detector_checkpoint
        self.image_pipeline = Compose(list(image_pipeline)) if image_pipeline else None
        self._visualizer = None

    def init_weights(self) -> None:
        """Initialise, then load ``detector_checkpoint``: mmdet's DETR ``init_weights`` would
        overwrite weights loaded through an ``init_cfg``, so they are loaded afterwards."""
        super().init_weights()
        if self.detector_checkpoint:
            if not osp.isfile(self.detector_checkpoint):
                raise FileNotFoundError('model.super_link.decoders.<name>.detector_checkpoint: '
                                        f'no file {self.detector_checkpoint}')
            load_checkpoint(self.detector, self.detector_checkpoint, map_location='cpu',
                            strict=False, revise_keys=[(r'^module\.', '')])

    # ---- inputs ---------------------------------------------------------------------------
    def phrase_embeddings(self, phrases: LinkedPhrases) -> Tensor:
        """(P, D): MLP of each phrase's query states, averaged over the queries."""
        states = phrases.select(*self.routing_tokens)
        return self.phrase_mlp(states.float()).mean(1)

    def text_dict(self, phrases: list[LinkedPhrases],
                  data_samples: list[VLMDataSample]) -> dict:
        """The ``text_dict`` Grounding DINO got from BERT, with one token per phrase.

        Phrases carry no position (all ``position_ids`` are 0), so the prediction does not
        depend on the order of the classes in the prompt, only the slot labels do; phrases
        attend to each other in the text enhancer and padding attends to nothing but itself.
        """
        embs = [self.phrase_embeddings(p) for p in phrases]
        for emb, sample in zip(embs, data_samples):
            if not 0 < len(emb) <= self.max_phrases:
                raise ValueError(f'{_where(sample)}: {len(emb)} phrases routed to the '
                                 f'perception decoder; it takes 1 to {self.max_phrases}')
        num = max(len(e) for e in embs)
        embedded = torch.stack([F.pad(e, (0, 0, 0, num - len(e))) for e in embs])
        valid = torch.stack([torch.arange(num, device=embedded.device) < len(e) for e in embs])
        eye = torch.eye(num, dtype=torch.bool, device=embedded.device)
        masks = (valid[:, :, None] & valid[:, None, :]) | eye
        return dict(embedded=embedded, text_token_mask=valid, masks=masks,
                    position_ids=torch.zeros_like(valid, dtype=torch.long))

    def _batch(self, data_samples: list[VLMDataSample], training: bool):
        for s in data_samples:
            if ('det_inputs' not in s or 'det_sample' not in s) and self.image_pipeline \
                    and s.metainfo.get('img_path'):
                # inference (tools/infer.py) packs only the MLLM's input: read our own image
                packed = self.image_pipeline(dict(img_path=s.img_path,
                                                  img_id=s.metainfo.get('sample_id')))
                s.det_inputs, s.det_sample = packed['det_inputs'], packed['det_sample']
            if 'det_inputs' not in s or 'det_sample' not in s:
                raise KeyError(f'{_where(s)}: the perception decoder needs det_inputs and '
                               'det_sample; end the pipeline with PackDecoderInputs and list '
                               'them in PackVLMInputs(fields=...)')
        data = self.detector.data_preprocessor(
            dict(inputs=[s.det_inputs for s in data_samples],
                 data_samples=[s.det_sample for s in data_samples]), training)
        return data['inputs'], data['data_samples']

    # ---- the contract ---------------------------------------------------------------------
    def loss(self, phrases: list[LinkedPhrases],
             data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        with torch.autocast(device_type='cpu', enabled=False), \
                torch.autocast(device_type='cuda', enabled=False):
            inputs, det_samples = self._batch(data_samples, training=True)
            text = self.text_dict(phrases, data_samples)
            for i, (det, sample) in enumerate(zip(det_samples, data_samples)):
                gt = det.gt_instances
                num = int(text['text_token_mask'][i].sum())
                if len(gt) and int(gt.labels.max()) >= num:
                    raise ValueError(f'{_where(sample)}: a target has phrase slot '
                                     f'{int(gt.labels.max())} but the answer has {num} phrases')
                gt.positive_maps = F.one_hot(gt.labels.long(), self.max_phrases).float()
                gt.text_token_mask = text['text_token_mask'][i][None].repeat(len(gt), 1)
            return self.detector.loss_phrases(inputs, text, det_samples)

    def predict(self, phrases: list[LinkedPhrases],
                data_samples: list[VLMDataSample]) -> list[VLMDataSample]:
        with torch.autocast(device_type='cpu', enabled=False), \
                torch.autocast(device_type='cuda', enabled=False):
            inputs, det_samples = self._batch(data_samples, training=False)
            text = self.text_dict(phrases, data_samples)
            ks = [self.max_per_img.get(s.get('task'), self.max_per_img['default'])
                  for s in data_samples]
            results = self.detector.predict_phrases(inputs, text, det_samples, ks)
        for result, p, sample in zip(results, phrases, data_samples):
            names = [n for n, t in zip(p.names, p.tokens) if t in self.routing_tokens] \
                if p.names else []
            result.label_names = [names[i] if i < len(names) else str(i)
                                  for i in result.labels.tolist()]
            sample.pred_instances = result
        return data_samples

    # ---- tools/infer.py and --show-dir ----------------------------------------------------
    def format_results(self, data_sample: VLMDataSample) -> dict:
        """Boxes, scores, phrase slot and phrase of each prediction; masks as COCO RLE."""
        if 'pred_instances' not in data_sample:
            return {}
        pred = data_sample.pred_instances
        out = dict(bboxes=pred.bboxes.tolist(), scores=pred.scores.tolist(),
                   labels=pred.labels.tolist(), phrases=list(pred.label_names))
        if 'masks' in pred:
            from pycocotools import mask as mask_utils
            rles = mask_utils.encode(np.asfortranarray(pred.masks.cpu().numpy().transpose(
                1, 2, 0).astype(np.uint8)))
            out['masks'] = [dict(size=r['size'], counts=r['counts'].decode()) for r in rles]
        return out

    def draw(self, image: np.ndarray, data_sample: VLMDataSample) -> Optional[np.ndarray]:
        """The predictions above ``draw_score_thr`` through mmdet's DetLocalVisualizer."""
        if 'pred_instances' not in data_sample:
            return None
        from mmdet.visualization import DetLocalVisualizer
        if self._visualizer is None:
            self._visualizer = DetLocalVisualizer(name=f'vlm2_grounding_dino_{id(self)}')
        pred = data_sample.pred_instances.cpu()
        names = list(dict.fromkeys(pred.label_names))
        shown = pred[pred.scores >= self.draw_score_thr]
        shown.labels = torch.tensor([names.index(n) for n in shown.label_names],
                                    dtype=torch.long)
        det = DetDataSample(pred_instances=shown)
        self._visualizer.dataset_meta = dict(classes=tuple(names))
        self._visualizer.add_datasample('pred', image, det, draw_gt=False, show=False,
                                        pred_score_thr=self.draw_score_thr)
        return self._visualizer.get_image()


def _where(sample: VLMDataSample) -> str:
    meta = sample.metainfo
    return f'{meta.get("ann_file", "sample")} id={meta.get("sample_id", "?")}'

