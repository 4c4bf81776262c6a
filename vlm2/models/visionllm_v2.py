"""VisionLLM v2: a multimodal LLM that answers in text and drives decoders via the super link."""
from collections import OrderedDict
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import Tensor

from vlm2.datasets.conversation import ConversationEncoder
from vlm2.registry import MODELS, TOKENIZERS
from vlm2.structures import VLMDataSample
from .generation import generate_with_super_link
from .hf_builders import build_hf_model, check_local_folder
from .projector import MLPProjector
from .super_link import SuperLink

IMAGE_PATCH_TOKEN = '<im_patch>'
EMB_TOKEN = '[EMB]'
PROMPT_TOKENS = ['<image>', '<region>', '<reg>', '</reg>']


@MODELS.register_module()
class VisionLLMv2(BaseModel):
    """The generalist MLLM (Wu et al., 2024): vision tower → projector → LLM → super link.

    Args:
        llm: ``dict(pretrained=folder)`` or ``dict(config=dict(type='LlamaConfig', ...))``,
            built with ``AutoModelForCausalLM``; a config's ``vocab_size`` follows the tokenizer.
        tokenizer: a ``TOKENIZERS`` config.
        vision_tower: a :class:`VisionTower` config; None for a text-only model.
        region_encoder: a :class:`RegionEncoder` config (widths and patch size are filled in
            from the tower and the LLM); None for a model without visual prompts.
        region_phrase_loss: a :class:`RegionPhraseLoss` config (an auxiliary term for LLMs
            trained from scratch, not the paper's); None: off.
        region_queries: add a region's embedding to the query inputs of an answer phrase that
            names it (``region1[SEG]`` after ``<reg>region1<region></reg>``), in training and
            as generation routes. Not the paper's, whose pretrained LLM carries the region to
            the phrase by itself; the tiny one, built from scratch, did not learn to (regions
            README), so its masks hardly depended on the prompt. False: off.
        super_link: ``dict(decoders=dict(name=decoder_cfg, ...))``.
        template / system: chat template name and system prompt (None: the template's).
        max_length: maximum tokens per sample.
        projector_depth: layers of the MLP projector (paper: 2).
        frozen_modules: attribute paths to freeze (``'llm'``, ``'vision_tower'``, ...).
        lora: a peft ``LoraConfig`` as a dict; wraps the LLM for stage 2.
        test_cfg: ``routing='generate'`` (the reply is generated and routing tokens fire as
            they come) or ``'forced'`` (the answer in the conversation is given and read in one
            forward pass, as perception benchmarks do); ``max_new_tokens``.
    """

    def __init__(self,
                 llm: dict,
                 tokenizer: dict,
                 vision_tower: Optional[dict] = None,
                 region_encoder: Optional[dict] = None,
                 region_phrase_loss: Optional[dict] = None,
                 region_queries: bool = False,
                 super_link: Optional[dict] = None,
                 template: str = 'vicuna',
                 system: Optional[str] = None,
                 max_length: int = 4096,
                 projector_depth: int = 2,
                 frozen_modules: Sequence[str] = (),
                 lora: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(type='VLMDataPreprocessor'),
                         init_cfg=init_cfg)
        self.test_cfg = {'routing': 'generate', 'max_new_tokens': 64, **(test_cfg or {})}
        if self.test_cfg['routing'] not in ('generate', 'forced'):
            raise ValueError('model.test_cfg.routing must be "generate" or "forced", got '
                             f'{self.test_cfg["routing"]!r}')
        self.tokenizer = TOKENIZERS.build(tokenizer)
        llm_cfg = dict(llm)
        hidden = self._llm_hidden_size(llm_cfg)
        self.super_link = SuperLink(decoders=(super_link or {}).get('decoders', {}),
                                    hidden_size=hidden, emb_token=EMB_TOKEN)
        self._add_tokens()
        if 'config' in llm_cfg:
            llm_cfg['config'] = dict(llm_cfg['config'], vocab_size=len(self.tokenizer))
        self.llm = build_hf_model('model.llm', **llm_cfg)
        self._resize_embeddings()
        self.vision_tower = MODELS.build(vision_tower) if vision_tower else None
        if self.vision_tower is not None:
            self.projector = MLPProjector(self.vision_tower.out_channels, hidden, projector_depth)
        self.region_encoder = None
        if region_encoder is not None:
            if self.vision_tower is None:
                raise ValueError('model.region_encoder needs a model.vision_tower')
            self.region_encoder = MODELS.build(
                dict(type='RegionEncoder', **region_encoder),
                default_args=dict(vision_width=self.vision_tower.hidden_size, llm_width=hidden,
                                  patch_size=self.vision_tower.patch_size))
        self.region_phrase_loss = None
        if region_phrase_loss is not None:
            if self.region_encoder is None:
                raise ValueError('model.region_phrase_loss needs a model.region_encoder')
            self.region_phrase_loss = MODELS.build(
                dict(type='RegionPhraseLoss', **region_phrase_loss),
                default_args=dict(hidden_size=hidden))
        if region_queries and self.region_encoder is None:
            raise ValueError('model.region_queries needs a model.region_encoder')
        self.region_queries = region_queries
        ids = self.tokenizer.convert_tokens_to_ids
        self.super_link.bind_token_ids(
            {t: ids(t) for t in [EMB_TOKEN] + self.super_link.routing_tokens})
        self.encoder = ConversationEncoder(
            self.tokenizer, template, max_length,
            routing={t: self.super_link.num_queries_of(t) for t in self.super_link.routing_tokens},
            image_token=IMAGE_PATCH_TOKEN, emb_token=EMB_TOKEN, system=system)
        if lora is not None:
            from peft import LoraConfig, get_peft_model
            self.llm = get_peft_model(self.llm, LoraConfig(**lora))
        for path in frozen_modules:
            module = self.get_submodule(path) if path else None
            if module is None:
                raise KeyError(f'model.frozen_modules: no submodule {path!r}')
            module.requires_grad_(False)

    # ---- construction helpers -------------------------------------------------------------
    @staticmethod
    def _llm_hidden_size(llm_cfg: dict) -> int:
        if 'config' in llm_cfg:
            return llm_cfg['config']['hidden_size']
        from transformers import AutoConfig
        check_local_folder(llm_cfg['pretrained'], 'model.llm.pretrained')
        return AutoConfig.from_pretrained(llm_cfg['pretrained'],
                                          local_files_only=True).get_text_config().hidden_size

    def _add_tokens(self) -> None:
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.unk_token or tok.eos_token
        new = [IMAGE_PATCH_TOKEN, EMB_TOKEN, *PROMPT_TOKENS, *self.super_link.routing_tokens]
        tok.add_tokens([t for t in new if t not in tok.get_vocab()], special_tokens=True)

    def _resize_embeddings(self) -> None:
        """Grow the embeddings to the tokenizer; new rows start at the mean of the old ones."""
        old = self.llm.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) <= old:
            return
        self.llm.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        with torch.no_grad():
            for emb in (self.llm.get_input_embeddings(), self.llm.get_output_embeddings()):
                if emb is not None and emb.weight.shape[0] > old:
                    emb.weight[old:] = emb.weight[:old].mean(0, keepdim=True)

    def _lm(self):
        """The causal LM under a possible peft wrapper."""
        return self.llm.get_base_model() if hasattr(self.llm, 'get_base_model') else self.llm

    # ---- the forward pieces -----------------------------------------------------------------
    def _where(self, sample: VLMDataSample) -> str:
        meta = sample.metainfo
        return f'{meta.get("ann_file", "sample")} id={meta.get("sample_id", "?")}'

    def _num_image_tokens(self, num_tiles: list[int]) -> list[int]:
        per_tile = self.vision_tower.num_tokens if self.vision_tower is not None else 0
        return [n * per_tile for n in num_tiles]

    def embed(self, inputs: dict, data_samples: list[VLMDataSample],
              for_generation: bool) -> tuple[dict, Tensor]:
        """Token ids (and labels) of the batch, and their input embeddings with the image
        features and super-link queries merged in."""
        device = self.llm.device
        num_tiles = inputs.get('num_tiles') or [0] * len(data_samples)
        batch = self.encoder.batch([s.conversation for s in data_samples],
                                   self._num_image_tokens(num_tiles), for_generation,
                                   [self._where(s) for s in data_samples], device)
        ids = batch['input_ids']
        embeds = self._lm().get_input_embeddings()(ids)
        pixel_values = inputs.get('pixel_values')
        if pixel_values is not None:
            if self.vision_tower is None:
                raise ValueError('the batch has images but the model has no vision_tower')
            layers = self.vision_tower.hidden_states(pixel_values)
            feats = self.projector(self.vision_tower.shuffle(
                layers[self.vision_tower.select_layer]))
            mask = ids == self.encoder.image_id
            embeds = embeds.masked_scatter(mask[..., None],
                                           feats.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
            if self.region_encoder is not None:
                embeds, batch['region_embeds'] = self._merge_regions(
                    ids, embeds, pixel_values, layers, num_tiles, data_samples)
        elif self.training and self.vision_tower is not None:
            embeds = embeds + self._zero_term(self.vision_tower, self.projector,
                                              self.region_encoder)
        embeds = self.super_link.embed_queries(ids, embeds)
        if self.region_queries and batch.get('region_embeds') is not None and not for_generation:
            embeds = embeds + self._region_query_inputs(batch, embeds)
        return batch, embeds

    def _named_regions(self, ids: Tensor) -> list[dict[str, int]]:
        """Per sample, each region's name (the text between ``<reg>`` and its ``<region>``)
        and its row among the batch's region embeddings (reading order over the batch, the
        order in which :meth:`_merge_regions` fills them in)."""
        region_id = self.encoder.region_id
        open_id = self.tokenizer.convert_tokens_to_ids('<reg>')
        named, row = [], 0
        for row_ids in ids.tolist():
            regions = {}
            for p in (i for i, t in enumerate(row_ids) if t == region_id):
                j = p - 1
                while j >= 0 and row_ids[j] != open_id:
                    j -= 1
                if j >= 0:
                    regions.setdefault(self._decode(row_ids[j + 1:p]), row)
                row += 1
            named.append(regions)
        return named

    def _region_query_inputs(self, batch: dict, embeds: Tensor) -> Tensor:
        """What ``region_queries`` adds to the input embeddings of a teacher-forced batch:
        each answer phrase that names a region gets that region's embedding on its queries."""
        found, names = self._answer_phrases(batch, embeds)
        regions = self._named_regions(batch['input_ids'])
        add = torch.zeros_like(embeds)
        for b, (phrases, phrase_names) in enumerate(zip(found, names)):
            for (token, _, p), name in zip(phrases, phrase_names):
                if name in regions[b]:
                    n = self.super_link.num_queries_of(token)
                    add[b, p + 1:p + 1 + n] = batch['region_embeds'][regions[b][name]]
        return add

    @staticmethod
    def _zero_term(*modules) -> Tensor:
        """Keeps modules in the graph at zero weight when a batch does not use them, as DDP
        needs; a single process skips it, so image-free batches cost nothing extra."""
        if not (dist.is_available() and dist.is_initialized()):
            return 0.0
        params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
        return sum(p.sum() for p in params) * 0.0 if params else 0.0

    def _merge_regions(self, ids: Tensor, embeds: Tensor, pixel_values: Tensor,
                       layers: tuple, num_tiles: list[int],
                       data_samples: list[VLMDataSample]) -> tuple[Tensor, Optional[Tensor]]:
        """Replace each ``<region>`` token with the embedding of the sample's next region;
        also returns the region embeddings in that order (None when the batch has none).

        Regions (``region_masks``: (R, S, S)) are drawn on a sample's global tile, the last
        one (the thumbnail, or the only tile).
        """
        region_id = self.encoder.region_id
        last_tile = torch.tensor(num_tiles, device=ids.device).cumsum(0) - 1
        tiles, masks = [], []
        for b, sample in enumerate(data_samples):
            m = sample.get('region_masks')
            n = 0 if m is None else len(m)
            found = int((ids[b] == region_id).sum())
            if found != n:
                raise ValueError(f'{self._where(sample)}: {n} region mask(s) but {found} '
                                 f'<region> token(s) in the conversation')
            if n:
                tiles += [int(last_tile[b])] * n
                masks.append(m.to(pixel_values.device))
        if not masks:
            return (embeds + self._zero_term(self.region_encoder) if self.training
                    else embeds), None
        index = torch.tensor(tiles, device=ids.device)
        regions = self.region_encoder(pixel_values[index], torch.cat(masks),
                                      [h[index] for h in layers])
        return embeds.masked_scatter((ids == region_id)[..., None],
                                     regions.to(embeds.dtype)), regions

    def _hidden(self, embeds: Tensor, attention_mask: Tensor) -> Tensor:
        return self._lm().get_decoder()(inputs_embeds=embeds,
                                        attention_mask=attention_mask).last_hidden_state

    # ---- BaseModel modes ----------------------------------------------------------------
    def forward(self, inputs: dict, data_samples: Optional[list] = None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}". Only supports loss, predict and tensor mode')

    def _forward(self, inputs: dict, data_samples: list[VLMDataSample]) -> Tensor:
        """Logits over the whole (teacher-forced) sequences."""
        batch, embeds = self.embed(inputs, data_samples, for_generation=False)
        return self._lm().get_output_embeddings()(self._hidden(embeds, batch['attention_mask']))

    def loss(self, inputs: dict, data_samples: list[VLMDataSample]) -> dict[str, Tensor]:
        """LM loss on answer tokens (routing tokens included, ``[EMB]`` excluded) plus the
        losses of the decoders the batch routes to; nothing is detached."""
        batch, embeds = self.embed(inputs, data_samples, for_generation=False)
        hidden = self._hidden(embeds, batch['attention_mask'])
        labels = batch['labels'][:, 1:]
        supervised = labels != -100
        logits = self._lm().get_output_embeddings()(hidden[:, :-1][supervised])
        loss_lm = F.cross_entropy(logits.float(), labels[supervised]) if supervised.any() \
            else logits.sum() * 0.0
        losses = dict(loss_lm=loss_lm, **self.super_link.loss(hidden, batch['input_ids'],
                                                              data_samples))
        if self.region_phrase_loss is not None:
            losses['loss_region_phrase'] = self._region_phrase_loss(batch, hidden)
        return losses

    def _answer_phrases(self, batch: dict, hidden: Tensor) -> tuple[list, list[list[str]]]:
        """Each sample's routed answer phrases (:meth:`SuperLink.gather`) and their names."""
        ids = batch['input_ids']
        found = self.super_link.gather(hidden, ids)
        names = [self._phrase_names(row, [p for _, _, p in phrases],
                                    stop=lambda j, lab=lab: lab[j] == -100)
                 for row, lab, phrases in zip(ids.tolist(), batch['labels'].tolist(), found)]
        return found, names

    def _region_phrase_loss(self, batch: dict, hidden: Tensor) -> Tensor:
        loss = None
        if batch.get('region_embeds') is not None:
            states, targets = self.region_phrase_loss.pairs(
                *self._answer_phrases(batch, hidden), self._named_regions(batch['input_ids']))
            loss = self.region_phrase_loss(states, batch['region_embeds'], targets)
        return loss if loss is not None else hidden.sum() * 0.0 + self._zero_term(
            self.region_phrase_loss)

    def predict(self, inputs: dict, data_samples: list[VLMDataSample],
                logits_processor: Optional[Callable] = None) -> list[VLMDataSample]:
        """Reply to each sample and let the decoders that fired fill their predictions."""
        if self.test_cfg['routing'] == 'forced':
            batch, embeds = self.embed(inputs, data_samples, for_generation=False)
            hidden = self._hidden(embeds, batch['attention_mask'])
            found, names = self._answer_phrases(batch, hidden)
            answers = [[i for i, lab in zip(ids, labels) if lab != -100]
                       for ids, labels in zip(batch['input_ids'].tolist(),
                                              batch['labels'].tolist())]
        else:
            batch, embeds = self.embed(inputs, data_samples, for_generation=True)
            eos = {self.tokenizer.eos_token_id} | {
                i for i in self.tokenizer.convert_tokens_to_ids(
                    list(self.encoder.template.stop_words)) if i != self.tokenizer.unk_token_id}
            answers, found = generate_with_super_link(
                self._lm().get_decoder(), self._lm().get_output_embeddings(),
                self._lm().get_input_embeddings(), self.super_link, embeds,
                batch['attention_mask'], self.test_cfg['max_new_tokens'], eos,
                self.encoder.pad_id, logits_processor, self._region_query_bias(batch))
            names = [self._phrase_names(a, [p for _, _, p in f]) for a, f in zip(answers, found)]
        for sample, ids, phrase_names in zip(data_samples, answers, names):
            sample.pred_text = self._decode(ids)
            sample.pred_phrases = phrase_names
        self.super_link.predict(self.super_link.route(found, names), data_samples)
        return data_samples

    def _region_query_bias(self, batch: dict
                           ) -> Optional[Callable[[int, list[int]], Optional[Tensor]]]:
        """``region_queries`` in generation: the region embedding that the phrase just
        generated by a sample names, to add to the queries it pulls in (None: none)."""
        if not self.region_queries or batch.get('region_embeds') is None:
            return None
        regions = self._named_regions(batch['input_ids'])

        def bias(b: int, tokens: list[int]) -> Optional[Tensor]:
            row = regions[b].get(self._phrase_names(tokens, [len(tokens) - 1])[0])
            return None if row is None else batch['region_embeds'][row]
        return bias

    def parse_losses(self, losses: dict) -> tuple[Tensor, dict]:
        """MMEngine's sum of the losses; the logged values are averaged over ranks (as mmdet
        2.x did), so every rank logs the loss of the global batch."""
        loss, log_vars = super().parse_losses(losses)
        if dist.is_available() and dist.is_initialized() and log_vars:
            values = torch.stack([v.detach().float() for v in log_vars.values()])
            dist.all_reduce(values.div_(dist.get_world_size()))
            log_vars = OrderedDict(zip(log_vars, values))
        return loss, log_vars

    # ---- text helpers ------------------------------------------------------------------
    def _decode(self, ids: list[int]) -> str:
        stop = {self.tokenizer.eos_token_id, self.encoder.pad_id}
        return self.tokenizer.decode([i for i in ids if i not in stop],
                                     skip_special_tokens=False).strip()

    def _phrase_names(self, ids: list[int], positions: list[int],
                      stop: Callable[[int], bool] = lambda j: False) -> list[str]:
        """The text before each routing token, back to the previous phrase or to ``stop``."""
        names = []
        for p in positions:
            j = p
            while j > 0 and not stop(j - 1) and ids[j - 1] != self.encoder.emb_id \
                    and ids[j - 1] not in self.encoder.routing_ids.values():
                j -= 1
            names.append(self._decode(ids[j:p]).strip(' ,;:.\n'))
        return names
