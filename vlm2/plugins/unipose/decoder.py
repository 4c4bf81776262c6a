"""The pose decoder: keypoints of any category and any keypoint subset, through the super link."""
from typing import Optional, Sequence

import mmcv
import mmdet.models  # noqa: F401  registers mmdet's backbones (ResNet) for 'mmdet.' configs
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from mmpose.models.heads.transformer_heads.transformers import FFN
from torch import Tensor, nn

from vlm2.models import BaseTaskDecoder
from vlm2.registry import MODELS
from vlm2.structures import LinkedPhrases, VLMDataSample
from .criterion import PoseCriterion
from .transformer import PoseTransformer
from .visualization import draw_pose

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@MODELS.register_module()
class UniPoseDecoder(BaseTaskDecoder):
    """UniPose-style end-to-end keypoint detector driven by class and keypoint phrases.

    The prompt's class phrases (``circle[DET]``) and keypoint phrases (``top tip[POSE]``) each
    pass through their own 3-layer MLP and are averaged over their N queries (paper §3.3).
    Instance queries are classified contrastively against the class phrases (labels are
    phrase slots, so the decoder is open-vocabulary); each instance regresses a box and the
    keypoints the prompt names, through keypoint queries conditioned on the keypoint-phrase
    embeddings (:class:`~.transformer.PoseTransformer`).

    Query tables: the decoder owns ``[POSE]`` with its own table and borrows the ``[DET]``
    phrases of its samples from the perception decoder, whose table they use (the paper's
    separate tables). A pose-only config, where no decoder owns ``[DET]``, either lets this
    decoder own it too (``routing_tokens=['[POSE]', '[DET]']``: one table shared by both), or
    adds a :class:`ClassPhraseTable` that owns ``[DET]`` with a separate table.

    Reads: ``pose_img`` (RGB uint8 (3, h, w)), ``pose_prompt`` (classes, keypoints,
    scale_factor) and, in training, ``gt_pose`` (see :class:`~.transforms.PoseTargets`).
    Writes: ``pred_pose``, an ``InstanceData`` of ``bboxes`` (xyxy, original pixels), ``scores``,
    ``labels`` (class-phrase slots), ``label_names``, ``keypoints`` (N, K, 2) and
    ``keypoint_scores`` (N, K) in the order of the prompt's keypoint phrases, which its
    metainfo ``keypoint_names`` lists.

    Args:
        llm_hidden_size: the LLM width (given by the super link).
        routing_tokens / num_queries: as in :class:`BaseTaskDecoder` (paper: 4 queries).
        class_token / keypoint_token: the tokens of class phrases and keypoint phrases.
        backbone: an image backbone config (paper: Swin-T); ``in_channels`` its levels' widths.
        embed_dims: the decoder width (paper: 256).
        transformer: :class:`~.transformer.PoseTransformer` arguments.
        loss_weights / aux_weight: see :class:`~.criterion.PoseCriterion`.
        image_scale: the long side of the decoder image when the decoder reads it itself
            (samples without ``pose_img``, as in ``tools/infer.py``).
        max_per_img / score_thr: instances kept in prediction.
    """
    routing_tokens = ('[POSE]',)
    borrowed_tokens = ('[DET]',)
    num_queries = 4
    reads = ('pose_img', 'pose_prompt', 'gt_pose')
    writes = ('pred_pose',)

    def __init__(self, llm_hidden_size: int, routing_tokens: Optional[Sequence[str]] = None,
                 num_queries: Optional[int] = None, class_token: str = '[DET]',
                 keypoint_token: str = '[POSE]',
                 backbone: Optional[dict] = None, in_channels: Sequence[int] = (512, 1024, 2048),
                 embed_dims: int = 256, transformer: Optional[dict] = None,
                 loss_weights: Optional[dict] = None, aux_weight: float = 1.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 size_divisor: int = 32, image_scale: int = 800, max_per_img: int = 100,
                 score_thr: float = 0.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(llm_hidden_size, routing_tokens, num_queries, init_cfg)
        if keypoint_token not in self.routing_tokens:
            raise ValueError(f'UniPoseDecoder.routing_tokens {self.routing_tokens} must hold the '
                             f'keypoint token {keypoint_token}')
        self.class_token, self.keypoint_token = class_token, keypoint_token
        self.borrowed_tokens = () if class_token in self.routing_tokens else (class_token,)
        self.backbone = MODELS.build(backbone or dict(
            type='mmdet.ResNet', depth=50, out_indices=(1, 2, 3), frozen_stages=1,
            norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True))
        groups = min(32, embed_dims // 4)
        self.input_proj = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, embed_dims, 1), nn.GroupNorm(groups, embed_dims))
            for c in in_channels])
        # two separate 3-layer MLPs: class phrases and keypoint-name phrases (paper §3.3)
        self.class_mlp = FFN(llm_hidden_size, embed_dims, embed_dims, 3)
        self.keypoint_mlp = FFN(llm_hidden_size, embed_dims, embed_dims, 3)
        self.transformer = PoseTransformer(embed_dims=embed_dims, num_levels=len(in_channels),
                                           **(transformer or {}))
        self.criterion = PoseCriterion(loss_weights, aux_weight)
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.size_divisor = size_divisor
        self.num_incomplete = 0
        self.image_scale = image_scale
        self.max_per_img = max_per_img
        self.score_thr = score_thr

    # ---- inputs -------------------------------------------------------------------------------
    def _phrase_embeddings(self, phrases: list[LinkedPhrases], samples: list[VLMDataSample],
                           targets: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Class and keypoint embeddings (B, P, D) / (B, K, D), padded, with masks. With
        ``targets`` the phrases must be the prompt's, which the targets are aligned to (a
        generated reply may name other phrases: prediction follows the reply)."""
        cls, kpt = [], []
        for p, s in zip(phrases, samples):
            c, k = p.select(self.class_token), p.select(self.keypoint_token)
            prompt = s.get('pose_prompt')
            if targets and (len(c), len(k)) != (len(prompt['classes']),
                                                len(prompt['keypoints'])):
                meta = s.metainfo
                raise ValueError(
                    f'{meta.get("ann_file", "sample")} id={meta.get("sample_id", "?")}: the reply '
                    f'has {len(c)} class and {len(k)} keypoint phrases, the prompt asks for '
                    f'{len(prompt["classes"])} and {len(prompt["keypoints"])} (truncated at '
                    'model.max_length?)')
            if not len(c) or not len(k):
                raise ValueError(f'sample {s.metainfo.get("sample_id", "?")}: a pose reply needs '
                                 f'at least one {self.class_token} and one {self.keypoint_token} '
                                 'phrase')
            cls.append(self.class_mlp(c).mean(1))
            kpt.append(self.keypoint_mlp(k).mean(1))
        return (*self._pad(cls), *self._pad(kpt))

    @staticmethod
    def _pad(seqs: list[Tensor]) -> tuple[Tensor, Tensor]:
        n = max(len(s) for s in seqs)
        out = seqs[0].new_zeros(len(seqs), n, seqs[0].shape[-1])
        mask = torch.zeros(len(seqs), n, dtype=torch.bool, device=out.device)
        for i, s in enumerate(seqs):
            out[i, :len(s)] = s
            mask[i, :len(s)] = True
        return out, mask

    def _own_image(self, sample: VLMDataSample) -> None:
        """Load the decoder's image from ``img_path`` when the pipeline packed none (e.g.
        ``tools/infer.py``, whose generic pipeline only packs the MLLM's tiles)."""
        path = sample.metainfo.get('img_path')
        if not path:
            raise KeyError(f'sample {sample.metainfo.get("sample_id", "?")}: no pose_img and no '
                           'img_path to read the decoder image from')
        img = mmcv.imread(path, channel_order='rgb')
        factor = self.image_scale / max(img.shape[:2])
        img = mmcv.imrescale(img, factor)
        sample.pose_img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample.pose_prompt = dict(sample.get('pose_prompt') or {}, scale_factor=factor)

    def _images(self, samples: list[VLMDataSample]) -> tuple[Tensor, Tensor, list]:
        """Normalised, padded decoder images, their padding mask (True on padding), sizes."""
        for s in samples:
            if s.get('pose_img') is None:
                self._own_image(s)
        shapes = [tuple(s.pose_img.shape[-2:]) for s in samples]
        d = self.size_divisor
        h = -(-max(s[0] for s in shapes) // d) * d
        w = -(-max(s[1] for s in shapes) // d) * d
        imgs = self.mean.new_zeros(len(samples), 3, h, w)
        mask = torch.ones(len(samples), h, w, dtype=torch.bool, device=imgs.device)
        for i, (s, (sh, sw)) in enumerate(zip(samples, shapes)):
            img = s.pose_img.to(imgs.device).float()
            imgs[i, :, :sh, :sw] = (img[None] - self.mean) / self.std
            mask[i, :sh, :sw] = False
        return imgs, mask, shapes

    def _forward(self, phrases, samples, targets: bool = False
                 ) -> tuple[list[dict], list, Tensor, Tensor]:
        cls, cls_mask, kpt, kpt_mask = self._phrase_embeddings(phrases, samples, targets)
        imgs, mask, shapes = self._images(samples)
        feats = [proj(f) for proj, f in zip(self.input_proj, self.backbone(imgs))]
        masks = [F.interpolate(mask[None].float(), size=f.shape[-2:])[0].bool() for f in feats]
        stages = self.transformer(feats, masks, cls, cls_mask, kpt, kpt_mask)
        stages = [{k: v.float() for k, v in s.items()} for s in stages]
        return stages, shapes, cls_mask, kpt_mask

    # ---- the contract -------------------------------------------------------------------------
    def loss(self, phrases: list[LinkedPhrases],
             data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        for s in data_samples:
            if s.get('gt_pose') is None or s.get('pose_prompt') is None:
                raise KeyError(f'sample {s.metainfo.get("sample_id", "?")} has no gt_pose or '
                               'pose_prompt; the pipeline needs PoseTargets and '
                               'PackVLMInputs(fields=(..., "pose_prompt", '
                               '"gt_pose"))')
        stages, shapes, cls_mask, _ = self._forward(phrases, data_samples, targets=True)
        device = stages[-1]['boxes'].device
        targets = [{k: v.to(device) for k, v in s.gt_pose.items()} for s in data_samples]
        return self.criterion(stages, targets, shapes, cls_mask.sum(1).tolist())

    @torch.no_grad()
    def predict(self, phrases: list[LinkedPhrases],
                data_samples: list[VLMDataSample]) -> list[VLMDataSample]:
        complete = [i for i, p in enumerate(phrases)
                    if self.class_token in p.tokens and self.keypoint_token in p.tokens]
        if len(complete) < len(phrases):  # a generated reply without class or keypoint phrase
            self.num_incomplete += len(phrases) - len(complete)
            print_log(f'UniPoseDecoder: {len(phrases) - len(complete)} replies without a '
                      f'{self.class_token} or a {self.keypoint_token} phrase get no prediction '
                      f'({self.num_incomplete} so far)', logger='current', level=30)
            phrases = [phrases[i] for i in complete]
            data_samples_all, data_samples = data_samples, [data_samples[i] for i in complete]
            if phrases:
                self.predict(phrases, data_samples)
            return data_samples_all
        stages, shapes, cls_mask, kpt_mask = self._forward(phrases, data_samples)
        final = stages[-1]
        for b, (p, s, (h, w)) in enumerate(zip(phrases, data_samples, shapes)):
            n_cls, n_kpt = int(cls_mask[b].sum()), int(kpt_mask[b].sum())
            prompt = s.get('pose_prompt') or {}
            names = [n for n, t in zip(p.names, p.tokens) if t == self.class_token] \
                or list(prompt.get('classes', [])) or [str(i) for i in range(n_cls)]
            kpt_names = [n for n, t in zip(p.names, p.tokens) if t == self.keypoint_token] \
                or list(prompt.get('keypoints', [])) or [str(i) for i in range(n_kpt)]
            factor = float(prompt.get('scale_factor', 1.0))
            # Not mmpose's EDPoseLabel.decode: it fixes K per model and returns no class labels,
            # while here K comes from the prompt and labels are the prompt's phrase slots.
            scores, labels = final['logits'][b, :, :n_cls].sigmoid().max(-1)
            order = scores.argsort(descending=True)[:self.max_per_img]
            order = order[scores[order] > self.score_thr]
            size = final['boxes'].new_tensor([w, h])
            cxcy, wh = final['boxes'][b, order, :2] * size, final['boxes'][b, order, 2:] * size
            s.pred_pose = InstanceData(
                metainfo=dict(keypoint_names=kpt_names),
                bboxes=(torch.cat([cxcy - wh / 2, cxcy + wh / 2], -1) / factor).cpu(),
                scores=scores[order].cpu(), labels=labels[order].cpu(),
                label_names=[names[int(i)] for i in labels[order]],
                keypoints=(final['keypoints'][b, order, :n_kpt] * size / factor).cpu(),
                keypoint_scores=final['visibility'][b, order, :n_kpt].sigmoid().cpu())
        return data_samples

    def format_results(self, data_sample: VLMDataSample) -> dict:
        pred = data_sample.get('pred_pose')
        if pred is None:
            return {}
        names = pred.metainfo['keypoint_names']
        return dict(instances=[
            dict(bbox=[round(float(v), 2) for v in pred.bboxes[i]],
                 score=round(float(pred.scores[i]), 4), category=pred.label_names[i],
                 keypoints={n: [round(float(pred.keypoints[i, j, 0]), 2),
                                round(float(pred.keypoints[i, j, 1]), 2),
                                round(float(pred.keypoint_scores[i, j]), 4)]
                            for j, n in enumerate(names)})
            for i in range(len(pred))])

    def draw(self, image: np.ndarray, data_sample: VLMDataSample) -> Optional[np.ndarray]:
        pred = data_sample.get('pred_pose')
        if pred is None:
            return None
        return draw_pose(image, pred, data_sample.get('pose_eval'))


@MODELS.register_module()
class ClassPhraseTable(BaseTaskDecoder):
    """Owns ``[DET]`` in pose-only configs, so that class phrases get a query table separate
    from ``[POSE]``'s (the paper's layout), where the perception decoder would own it.

    It only provides the table: its phrases are borrowed by the pose decoder in every pose
    sample. A ``[DET]`` phrase routed to it alone (a reply without ``[POSE]``) is counted
    and yields no prediction.
    """
    routing_tokens = ('[DET]',)
    num_queries = 4

    def __init__(self, llm_hidden_size: int, **kwargs) -> None:
        super().__init__(llm_hidden_size, **kwargs)
        self.register_buffer('_zero', torch.zeros(()), persistent=False)
        self.num_unpaired = 0

    def loss(self, phrases, data_samples):
        self.num_unpaired += len(phrases)
        return dict(loss_unpaired=sum(torch.stack(p.states).sum() for p in phrases) * 0.0)

    def predict(self, phrases, data_samples):
        self.num_unpaired += len(phrases)
        return data_samples

    def dummy_loss(self) -> Tensor:
        return self._zero
