"""The DETR-style keypoint transformer of the pose decoder (ED-Pose / UniPose line).

Image features → deformable encoder → language-guided query selection (the encoder tokens
scored contrastively against the class phrases, as in Grounding DINO and UniPose) → box
decoder layers (instance queries) → keypoint decoder layers, where each instance expands into
one query per keypoint phrase of the prompt, conditioned on that phrase's embedding.

The layers are mmpose's EDPose modules (``DeformableDetrTransformerEncoder`` and
``...DecoderLayer``, the proposal generation of ``EDPoseHead`` and the sine embedding of
``EDPoseDecoder``). mmpose's ``EDPoseDecoder.forward`` itself is not reused: it fixes one
keypoint count (17) for every query group, while a prompt here asks for any K, different per
sample; the expansion below masks the missing keypoints instead.
"""
import math

import torch
from mmengine.model import BaseModule, ModuleList
from mmpose.models.heads.transformer_heads.edpose_head import EDPoseDecoder, EDPoseHead
from mmpose.models.heads.transformer_heads.transformers import (
    DeformableDetrTransformerDecoderLayer, DeformableDetrTransformerEncoder, FFN)
from mmpose.models.heads.transformer_heads.transformers.utils import PositionEmbeddingSineHW
from mmpose.models.utils import inverse_sigmoid
from torch import Tensor, nn


def contrastive_logits(queries: Tensor, phrases: Tensor, phrase_mask: Tensor,
                       bias: Tensor) -> Tensor:
    """Dot products of queries (B, Q, D) with phrase embeddings (B, P, D), scaled; padded
    phrase slots get -inf (they are never a class)."""
    logits = queries @ phrases.transpose(1, 2) / math.sqrt(queries.shape[-1]) + bias
    return logits.masked_fill(~phrase_mask[:, None, :], float('-inf'))


class PoseTransformer(BaseModule):
    """Encoder, query selection, box layers and keypoint layers.

    Args:
        embed_dims / num_heads / num_levels / num_points / ffn_channels: layer sizes.
        num_encoder_layers / num_box_layers / num_keypoint_layers: depths (ED-Pose: 6 / 2 / 4).
        num_instances: instance queries kept by the query selection.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4,
                 num_points: int = 4, ffn_channels: int = 2048, num_encoder_layers: int = 6,
                 num_box_layers: int = 2, num_keypoint_layers: int = 4,
                 num_instances: int = 100) -> None:
        super().__init__()
        d = embed_dims
        ffn = dict(embed_dims=d, feedforward_channels=ffn_channels, num_fcs=2, ffn_drop=0.0)
        deform = dict(embed_dims=d, num_heads=num_heads, num_levels=num_levels,
                      num_points=num_points, batch_first=True)
        self.encoder = DeformableDetrTransformerEncoder(
            num_layers=num_encoder_layers, layer_cfg=dict(self_attn_cfg=deform, ffn_cfg=ffn))
        layer = dict(self_attn_cfg=dict(embed_dims=d, num_heads=num_heads, attn_drop=0.0,
                                        batch_first=True),
                     cross_attn_cfg=deform, ffn_cfg=ffn)
        self.box_layers = ModuleList([DeformableDetrTransformerDecoderLayer(**layer)
                                      for _ in range(num_box_layers)])
        self.keypoint_layers = ModuleList([DeformableDetrTransformerDecoderLayer(**layer)
                                           for _ in range(num_keypoint_layers)])
        self.embed_dims = d
        self.num_instances = num_instances
        self.positional = PositionEmbeddingSineHW(d // 2, temperatureH=20, temperatureW=20,
                                                  normalize=True)
        self.level_embed = nn.Parameter(torch.zeros(num_levels, d))
        # names EDPoseHead.gen_encoder_output_proposals reads
        self.memory_trans_fc = nn.Linear(d, d)
        self.memory_trans_norm = nn.LayerNorm(d)
        self.content = nn.Embedding(num_instances, d)
        self.ref_point_head = FFN(2 * d, d, d, 2)
        self.norm = nn.LayerNorm(d)
        # heads: class projection (contrastive), box deltas, keypoint deltas and sizes, visibility
        self.cls_proj = nn.Linear(d, d)
        self.cls_bias = nn.Parameter(torch.tensor(-math.log((1 - 0.01) / 0.01)))
        self.enc_box = FFN(d, d, 4, 3)
        self.box_heads = ModuleList([FFN(d, d, 4, 3)
                                     for _ in range(num_box_layers + num_keypoint_layers)])
        self.kpt_init = FFN(d, d, 2, 3)
        self.kpt_size = nn.Linear(d, 2)
        self.kpt_heads = ModuleList([FFN(d, d, 2, 3) for _ in range(num_keypoint_layers)])
        self.vis_head = nn.Linear(d, 1)
        nn.init.normal_(self.level_embed, std=0.02)
        # box deltas start at zero (Deformable DETR); keypoint deltas near zero but not zero,
        # so that the keypoint losses reach the keypoint phrases from the first step
        for head in [self.enc_box, *self.box_heads, self.kpt_init, *self.kpt_heads]:
            nn.init.normal_(head.layers[-1].weight, std=0.0 if head in self.box_heads or
                            head is self.enc_box else 0.01)
            nn.init.zeros_(head.layers[-1].bias)

    # ---- pieces -----------------------------------------------------------------------------
    def classify(self, queries: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        return contrastive_logits(self.cls_proj(queries), phrases, phrase_mask, self.cls_bias)

    def _pos_query(self, ref: Tensor) -> Tensor:
        sine = EDPoseDecoder.get_proposal_pos_embed(ref, num_pos_feats=self.embed_dims // 2)
        return self.ref_point_head(sine)

    def _layer(self, layer, query, ref, memory, enc, attn_mask=None):
        pos = self._pos_query(ref)
        ref_in = ref[:, :, None] * torch.cat([enc['valid_ratios']] * 2, -1)[:, None]
        return layer(query, query_pos=pos, value=memory, key_padding_mask=enc['mask'],
                     spatial_shapes=enc['spatial_shapes'],
                     level_start_index=enc['level_start_index'],
                     valid_ratios=enc['valid_ratios'], reference_points=ref_in,
                     self_attn_mask=attn_mask)

    def encode(self, feats: list[Tensor], masks: list[Tensor]) -> dict:
        """Flatten the levels and run the encoder; ``masks`` are True on padding."""
        flat, pos, flat_mask, shapes = [], [], [], []
        for lvl, (f, m) in enumerate(zip(feats, masks)):
            shapes.append(f.shape[-2:])
            pos.append((self.positional(m) + self.level_embed[lvl][None, :, None, None])
                       .flatten(2).transpose(1, 2))
            flat.append(f.flatten(2).transpose(1, 2))
            flat_mask.append(m.flatten(1))
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=feats[0].device)
        level_start_index = torch.cat([spatial_shapes.new_zeros(1),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]])
        valid_ratios = torch.stack([torch.stack([(~m[:, 0]).sum(1).float() / m.shape[2],
                                                 (~m[:, :, 0]).sum(1).float() / m.shape[1]], -1)
                                    for m in masks], 1)
        mask = torch.cat(flat_mask, 1)
        enc = dict(mask=mask, spatial_shapes=spatial_shapes,
                   level_start_index=level_start_index, valid_ratios=valid_ratios)
        enc['memory'] = self.encoder(torch.cat(flat, 1), torch.cat(pos, 1), mask,
                                     spatial_shapes, level_start_index, valid_ratios)
        return enc

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, feats: list[Tensor], masks: list[Tensor], cls_emb: Tensor,
                cls_mask: Tensor, kpt_emb: Tensor, kpt_mask: Tensor) -> list[dict]:
        """Predictions of every stage, the last one final.

        Args:
            feats / masks: image features per level (B, D, h, w) and padding masks (B, h, w).
            cls_emb / cls_mask: class-phrase embeddings (B, P, D), True on real phrases.
            kpt_emb / kpt_mask: keypoint-phrase embeddings (B, K, D), True on real phrases.

        Returns:
            per stage a dict with ``logits`` (B, Q, P) and ``boxes`` (B, Q, 4) normalised
            cxcywh; the keypoint stages add ``keypoints`` (B, Q, K, 2) normalised xy and
            ``visibility`` (B, Q, K) logits.
        """
        enc = self.encode(feats, masks)
        memory = enc['memory']
        out_memory, proposals = EDPoseHead.gen_encoder_output_proposals(
            self, memory, enc['mask'], enc['spatial_shapes'])
        enc_logits = self.classify(out_memory, cls_emb, cls_mask)
        enc_boxes_unsig = self.enc_box(out_memory) + proposals
        q = min(self.num_instances, memory.shape[1])
        score = enc_logits.max(-1).values.masked_fill(torch.isinf(proposals).any(-1), -1e4)
        top = score.topk(q, dim=1).indices
        stages = [dict(logits=enc_logits.gather(1, top[..., None].expand(-1, -1,
                                                                         enc_logits.shape[-1])),
                       boxes=enc_boxes_unsig.gather(1, top[..., None].expand(-1, -1, 4)).sigmoid())]
        ref = stages[0]['boxes'].detach()
        query = self.content.weight[:q][None].expand(memory.shape[0], -1, -1)
        head = 0
        for layer in self.box_layers:
            query = self._layer(layer, query, ref, memory, enc)
            out = self.norm(query)
            boxes = (self.box_heads[head](out) + inverse_sigmoid(ref)).sigmoid()
            head += 1
            stages.append(dict(logits=self.classify(out, cls_emb, cls_mask), boxes=boxes))
            ref = boxes.detach()
        return stages + self._keypoint_stages(query, ref, memory, enc, cls_emb, cls_mask,
                                              kpt_emb, kpt_mask, head)

    def _keypoint_stages(self, query, ref, memory, enc, cls_emb, cls_mask, kpt_emb, kpt_mask,
                         head) -> list[dict]:
        b, q, d = query.shape
        k = kpt_emb.shape[1]
        # one group per instance: [instance, keypoint_1 .. keypoint_K]
        kq = query[:, :, None] + kpt_emb[:, None]                            # B, Q, K, D
        xy = (inverse_sigmoid(ref[:, :, None, :2]) + self.kpt_init(kq)).sigmoid()
        wh = self.kpt_size(kpt_emb).sigmoid()[:, None] * ref[:, :, None, 2:]
        kref = torch.cat([xy, wh], -1)                                       # B, Q, K, 4
        tokens = torch.cat([query[:, :, None], kq], 2).flatten(1, 2)
        refs = torch.cat([ref[:, :, None], kref], 2).flatten(1, 2)
        mask = self._group_mask(b, q, k, kpt_mask)
        stages = []
        for i, layer in enumerate(self.keypoint_layers):
            tokens = self._layer(layer, tokens, refs.detach(), memory, enc, mask)
            out = self.norm(tokens).view(b, q, k + 1, d)
            refs = refs.view(b, q, k + 1, 4)
            boxes = (self.box_heads[head + i](out[:, :, 0]) +
                     inverse_sigmoid(refs[:, :, 0])).sigmoid()
            kxy = (self.kpt_heads[i](out[:, :, 1:]) + inverse_sigmoid(refs[:, :, 1:, :2])).sigmoid()
            stages.append(dict(logits=self.classify(out[:, :, 0], cls_emb, cls_mask),
                               boxes=boxes, keypoints=kxy,
                               visibility=self.vis_head(out[:, :, 1:]).squeeze(-1)))
            kref = torch.cat([kxy, refs[:, :, 1:, 2:]], -1)
            refs = torch.cat([boxes[:, :, None], kref], 2).flatten(1, 2)
        return stages

    def _group_mask(self, b: int, q: int, k: int, kpt_mask: Tensor) -> Tensor:
        """Self-attention mask (True = blocked), per sample and head: instance queries see each
        other and their own keypoints; keypoint queries see their own group; padded keypoints
        are seen by no one (ED-Pose's human-to-keypoint mask, with K varying per sample)."""
        n = q * (k + 1)
        group = torch.arange(n, device=kpt_mask.device) // (k + 1)
        is_inst = torch.arange(n, device=kpt_mask.device) % (k + 1) == 0
        allowed = (group[:, None] == group[None]) | (is_inst[:, None] & is_inst[None])
        real = torch.cat([kpt_mask.new_ones(b, 1), kpt_mask], 1).repeat(1, q)  # B, n
        allowed = allowed[None] & real[:, None, :]
        allowed = allowed | torch.eye(n, dtype=torch.bool, device=kpt_mask.device)[None]
        heads = self.keypoint_layers[0].self_attn.num_heads if len(self.keypoint_layers) else 1
        return (~allowed).repeat_interleave(heads, 0)
