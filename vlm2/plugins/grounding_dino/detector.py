"""mmdet's Grounding DINO with its BERT branch removed: phrase embeddings are the text tokens.

Everything except the text side is mmdet's: backbone, neck, the feature-enhancer encoder
(deformable self-attention + text self-attention + bi-attention fusion), the cross-modality
decoder, the contrastive classification, two-stage query selection and CDN denoising.
"""
from typing import Dict, Tuple

import torch
from mmdet.models.detectors.dino import DINO
from mmdet.models.detectors.grounding_dino import GroundingDINO
from mmdet.models.layers import CdnQueryGenerator, SinePositionalEncoding
from mmdet.models.layers.transformer.utils import get_text_sine_pos_embed
from mmdet.models.layers.transformer.grounding_dino_layers import (
    GroundingDinoTransformerDecoder, GroundingDinoTransformerEncoder)
from torch import Tensor, nn


class PhraseFusionEncoder(GroundingDinoTransformerEncoder):
    """mmdet's Grounding DINO feature enhancer, with three fixes to its ``forward``:

    - the text self-attention mask is expanded per head with ``repeat_interleave``
      (``nn.MultiheadAttention`` wants sample-major ``(B * heads, L, S)``); mmdet's ``repeat``
      gives head-major order, so with different masks in a batch a sample got another
      sample's mask and its prediction depended on the batch;
    - the bi-attention fusion gets the *keep* mask it expects for the text (mmdet passes
      ``text_attention_mask`` = True at padding, which that function reads as keep, so
      image→text attention went to the padding only, or was uniform without padding);
    - the text positions are embedded at the model width, not a hard-wired 256.
    """

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                memory_text: Tensor, text_attention_mask: Tensor, pos_text=None,
                text_self_attention_masks: Tensor = None, position_ids: Tensor = None):
        output = query
        reference_points = self.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device=query.device)
        if position_ids is None:
            position_ids = torch.arange(memory_text.shape[1], device=memory_text.device)[
                None].expand(memory_text.shape[0], -1)
        pos_text = get_text_sine_pos_embed(position_ids[..., None].float(),
                                           num_pos_feats=memory_text.shape[-1],
                                           exchange_xy=False)
        for layer_id, layer in enumerate(self.layers):
            output, memory_text = self.fusion_layers[layer_id](
                visual_feature=output, lang_feature=memory_text,
                attention_mask_v=key_padding_mask, attention_mask_l=~text_attention_mask)
            heads = self.text_layers[layer_id].self_attn_cfg.num_heads
            memory_text = self.text_layers[layer_id](
                query=memory_text, query_pos=pos_text,
                attn_mask=~text_self_attention_masks.repeat_interleave(heads, dim=0),
                key_padding_mask=None)
            output = layer(query=output, query_pos=query_pos,
                           reference_points=reference_points, spatial_shapes=spatial_shapes,
                           level_start_index=level_start_index,
                           key_padding_mask=key_padding_mask)
        return output, memory_text


class PhraseCdnQueryGenerator(CdnQueryGenerator):
    """DINO's contrastive denoising queries, with their content taken from the phrases.

    mmdet's generator embeds each target's label through a table indexed by the label. Here
    labels are phrase slots, whose meaning changes with every prompt, and a slot-indexed
    table let the denoising loss be solved by telling slots apart: it trained the LLM to
    encode a phrase's place in the answer instead of its words (``benchmarks/phrase_probe.py``
    measured R2 by class 0.008 on training prompts after 1,241 iterations). The content of a
    denoising query is a learned projection of its phrase's text feature instead, as a
    class's row of the table is in DINO, and label noise draws another phrase of the same
    prompt. ``label_embedding`` is that projection (a ``Linear``: mmdet touches its
    ``weight[0, 0]`` when a batch has no target).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label_embedding = nn.Linear(self.embed_dims, self.embed_dims)
        self.text: Tuple[Tensor, Tensor] = None
        self._target_batch: Tensor = None

    def __call__(self, batch_data_samples: list) -> tuple:
        if self.text is None:
            raise RuntimeError('PhraseCdnQueryGenerator.text (memory_text, text_token_mask) '
                               'must be set before generating denoising queries')
        self._target_batch = torch.cat([
            torch.full((len(s.gt_instances),), i, dtype=torch.long,
                       device=self.text[0].device) for i, s in enumerate(batch_data_samples)])
        return super().__call__(batch_data_samples)

    def generate_dn_label_query(self, gt_labels: Tensor, num_groups: int) -> Tensor:
        memory_text, text_token_mask = self.text
        labels = gt_labels.long().repeat(2 * num_groups, 1).view(-1)
        batch = self._target_batch.repeat(2 * num_groups)
        noisy = torch.rand_like(labels.float()) < self.label_noise_scale * 0.5
        other = (torch.rand_like(labels.float()) * text_token_mask.sum(1)[batch]).long()
        labels = torch.where(noisy, other, labels)
        return self.label_embedding(memory_text[batch, labels])


class PhraseGroundingDINO(GroundingDINO):
    """Grounding DINO whose "text tokens" are given, one per phrase slot.

    The backbone's first output (stride 4) feeds the mask branch's pixel decoder; the others
    go through the neck into the transformer. ``text_dict`` is what mmdet's BERT wrapper
    returned: ``embedded`` (B, P, D), ``text_token_mask`` (B, P) (True = a phrase),
    ``position_ids`` (B, P) and ``masks`` (B, P, P) (True = may attend).

    Args:
        as in mmdet's ``GroundingDINO``, without ``language_model``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(None, *args, **kwargs)
        if kwargs.get('dn_cfg') is not None:  # DINO.__init__ completed it in place
            self.dn_query_generator = PhraseCdnQueryGenerator(**kwargs['dn_cfg'])

    def _init_layers(self) -> None:
        # GroundingDINO._init_layers without the language model and its text_feat_map:
        # the phrase MLP of the decoder already maps to embed_dims.
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = PhraseFusionEncoder(**self.encoder)
        self.decoder = GroundingDinoTransformerDecoder(**self.decoder)
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        if self.positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError('detector.positional_encoding.num_feats must be half of the '
                             f'embed_dims ({self.embed_dims})')
        # initialised here too (mmdet leaves it as uninitialised memory until init_weights)
        self.level_embed = nn.Parameter(nn.init.normal_(
            torch.empty(self.num_feature_levels, self.embed_dims)))
        self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
        self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
        self.language_model = None
        self.text_feat_map = None

    def init_weights(self) -> None:
        DINO.init_weights(self)

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tuple[Tensor], Tensor]:
        """Neck features for the transformer, and the stride-4 map for the pixel decoder."""
        x = self.backbone(batch_inputs)
        return self.neck(x[1:]), x[0]

    def pre_decoder(self, memory: Tensor, memory_mask: Tensor, spatial_shapes: Tensor,
                    memory_text: Tensor, text_token_mask: Tensor,
                    batch_data_samples=None) -> Tuple[Dict]:
        """mmdet's, with the phrases handed to the denoising query generator."""
        self.dn_query_generator.text = (memory_text, text_token_mask)
        try:
            return super().pre_decoder(memory, memory_mask, spatial_shapes, memory_text,
                                       text_token_mask, batch_data_samples)
        finally:
            self.dn_query_generator.text = None

    def forward_transformer(self, img_feats: Tuple[Tensor], text_dict: Dict,
                            batch_data_samples=None) -> Dict:
        """As ``GroundingDINO.forward_transformer``, also returning the first level of the
        encoder memory as a map (MaskDINO's pixel decoder adds it to the stride-4 feature)."""
        enc_in, dec_in = self.pre_transformer(img_feats, batch_data_samples)
        enc_out = self.forward_encoder(**enc_in, text_dict=text_dict)
        tmp_dec_in, head_in = self.pre_decoder(**enc_out, batch_data_samples=batch_data_samples)
        dec_in.update(tmp_dec_in)
        head_in.update(self.forward_decoder(**dec_in))
        h, w = (int(v) for v in enc_out['spatial_shapes'][0])
        memory = enc_out['memory'][:, :h * w]
        head_in['memory_map'] = memory.transpose(1, 2).reshape(memory.shape[0], -1, h, w)
        return head_in

    def loss_phrases(self, batch_inputs: Tensor, text_dict: Dict,
                     batch_data_samples: list) -> dict:
        """Losses; ``gt_instances`` carry ``positive_maps`` and ``text_token_mask``."""
        feats, pixel = self.extract_feat(batch_inputs)
        head_in = self.forward_transformer(feats, text_dict, batch_data_samples)
        return self.bbox_head.loss(**head_in, pixel_feat=pixel,
                                   batch_data_samples=batch_data_samples)

    def predict_phrases(self, batch_inputs: Tensor, text_dict: Dict, batch_data_samples: list,
                        max_per_img: list[int]) -> list:
        """Per image, an ``InstanceData`` of the top-k (query, phrase) pairs."""
        feats, pixel = self.extract_feat(batch_inputs)
        head_in = self.forward_transformer(feats, text_dict, batch_data_samples)
        return self.bbox_head.predict_phrases(**head_in, pixel_feat=pixel,
                                              batch_data_samples=batch_data_samples,
                                              max_per_img=max_per_img)
