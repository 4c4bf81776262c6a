"""Dense supervised pretraining of a vision tower built from scratch."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import Tensor, nn

from vlm2.registry import MODELS


@MODELS.register_module()
class TowerPretrainer(BaseModel):
    """Teaches a tower the attributes of what covers each of its patches.

    Each patch of the features the MLLM reads (``select_layer``, before pixel shuffle)
    predicts, per attribute, the label of the instance covering most of it, or background,
    through a linear head. The paper's towers come pretrained (CLIP, InternViT); a tiny tower
    trained from scratch inside the MLLM learns slowly from the LM loss alone, so this gives
    it a start. The checkpoint keys are those of :class:`VisionLLMv2` (``vision_tower.*``),
    so ``VisionTower(init_cfg=dict(type='Pretrained', ...))`` or ``load_from`` reads it.

    With ``mllm`` (a whole :class:`VisionLLMv2` config) it also aligns the projector with the
    LLM's word embeddings, standing in for the paper's caption-aligned projector (stage 1
    with a pretrained LLM): each image token after the projector learns the sum of the
    input embeddings of the words naming its labels (``label_names`` of the data set;
    background adds nothing), e.g. ``red`` + ``circle``. An LLM built from scratch then meets
    the asked words in the image tokens as it meets them in text. The LLM stays as built
    (frozen) and is saved with the tower and projector: ``model.init_cfg`` or ``load_from``
    of the MLLM reads all three.

    Args:
        vision_tower: a :class:`VisionTower` config (trainable: ``frozen=False``); or
        mllm: a :class:`VisionLLMv2` config whose tower, projector and LLM are used.
        num_classes: attribute → number of labels including background, in the dataset's
            attribute order (:class:`~vlm2.datasets.InstanceAttributeDataset`).
        word_loss_weight: weight of the word-alignment loss (``mllm`` only); the loss is the
            squared error in units of the mean squared word-embedding entry.
    """

    def __init__(self, num_classes: dict[str, int], vision_tower: Optional[dict] = None,
                 mllm: Optional[dict] = None, word_loss_weight: float = 1.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(type='VLMDataPreprocessor'),
                         init_cfg=init_cfg)
        if (vision_tower is None) == (mllm is None):
            raise ValueError('TowerPretrainer: set exactly one of model.vision_tower (the tower '
                             'alone) and model.mllm (tower, projector and word embeddings)')
        if mllm is not None:
            built = MODELS.build(mllm)
            if built.vision_tower is None:
                raise ValueError('model.mllm has no vision_tower to pretrain')
            # the MLLM's own attribute names, so its checkpoint keys are the MLLM's
            self.vision_tower, self.projector = built.vision_tower, built.projector
            self.llm, self.tokenizer = built.llm, built.tokenizer
            self.llm.requires_grad_(False)
            self.word_loss_weight = word_loss_weight
        else:
            self.vision_tower, self.llm = MODELS.build(vision_tower), None
        if self.vision_tower.frozen:
            raise ValueError('model.vision_tower.frozen=True: a frozen tower cannot be '
                             'pretrained; set frozen=False')
        self.num_classes = dict(num_classes)
        self.heads = nn.ModuleDict({k: nn.Linear(self.vision_tower.hidden_size, n)
                                    for k, n in self.num_classes.items()})

    def patch_targets(self, data_samples: list[BaseDataElement], grid: Optional[int] = None
                      ) -> Tensor:
        """(attributes, batch, grid²): the majority label of each cell's pixels; the cells
        are the tower's patches unless ``grid`` says otherwise."""
        g, targets = grid or self.vision_tower.grid_size, []
        for sample in data_samples:
            names = tuple(sample.metainfo['attributes'])
            if names != tuple(self.num_classes):
                raise ValueError(f'{sample.img_path}: the data set labels attributes {names}, '
                                 f'model.num_classes names {tuple(self.num_classes)}')
            per_attr = []
            for maps, n in zip(sample.gt_label_maps, self.num_classes.values()):
                if int(maps.max()) >= n:
                    raise ValueError(f'{sample.img_path}: label {int(maps.max())} does not fit '
                                     f'model.num_classes ({n} including background)')
                votes = F.adaptive_avg_pool2d(F.one_hot(maps, n).permute(2, 0, 1).float(), g)
                per_attr.append(votes.argmax(0).flatten())
            targets.append(torch.stack(per_attr))
        return torch.stack(targets, 1)

    def word_table(self, attribute: str, names: list[str]) -> Tensor:
        """(labels, LLM width): the mean input embedding of each label's words; zero for
        background (label 0)."""
        embed = self.llm.get_input_embeddings()
        rows = [torch.zeros(embed.weight.shape[1], device=embed.weight.device)]
        for name in names[1:]:
            ids = self.tokenizer(name, add_special_tokens=False)['input_ids']
            if not ids or self.tokenizer.unk_token_id in ids:
                raise ValueError(f'label_names.{attribute}: {name!r} is not in the '
                                 'tokenizer\'s vocabulary, so no word embedding can name it')
            rows.append(embed.weight[ids].float().mean(0))
        return torch.stack(rows).detach()

    def _token_labels(self, data_samples: list[BaseDataElement]) -> Tensor:
        return self.patch_targets(data_samples,
                                  self.vision_tower.grid_size // self.vision_tower.pixel_shuffle)

    def _word_targets(self, data_samples: list[BaseDataElement], labels: Tensor) -> Tensor:
        """(batch, tokens, LLM width): per image token, the sum of its labels' words."""
        out = []
        for b, sample in enumerate(data_samples):
            names = sample.metainfo.get('label_names')
            if names is None:
                raise ValueError(f'{sample.img_path}: model.mllm aligns image tokens with the '
                                 'words of their labels, but the sample has no label_names '
                                 '(InstanceAttributeDataset + PackInstanceLabelMaps give them)')
            out.append(sum(self.word_table(k, names[k])[labels[a, b]]
                           for a, k in enumerate(self.num_classes)))
        return torch.stack(out)

    def forward(self, inputs: dict, data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        pixel_values = inputs['pixel_values']
        if pixel_values is None or any(n != 1 for n in inputs['num_tiles']):
            raise ValueError('TowerPretrainer takes exactly one tile per image')
        feats = self.vision_tower.hidden_states(pixel_values)[self.vision_tower.select_layer]
        logits = {k: head(feats).float() for k, head in self.heads.items()}
        tokens = (self.projector(self.vision_tower.shuffle(feats)).float()
                  if self.llm is not None else None)
        if mode == 'tensor':
            return logits if tokens is None else dict(logits, image_tokens=tokens)
        targets = self.patch_targets(data_samples).to(feats.device)
        token_labels = self._token_labels(data_samples).to(feats.device) if tokens is not None \
            else None
        if mode == 'loss':
            losses = {f'loss_{k}': F.cross_entropy(lg.flatten(0, 1), t.flatten())
                      for (k, lg), t in zip(logits.items(), targets)}
            if tokens is not None:
                scale = self.llm.get_input_embeddings().weight.detach().float().pow(2).mean()
                err = (tokens - self._word_targets(data_samples, token_labels)).pow(2).mean()
                losses['loss_words'] = self.word_loss_weight * err / scale
            return losses
        if mode == 'predict':
            preds = torch.stack([lg.argmax(-1) for lg in logits.values()], 1)  # (B, A, P)
            for b, (sample, pred, target) in enumerate(
                    zip(data_samples, preds, targets.transpose(0, 1))):
                sample.pred_patch_labels = pred.cpu()
                sample.gt_patch_labels = target.cpu()
                if tokens is not None:  # the nearest label word of each image token
                    names = sample.metainfo['label_names']
                    sample.pred_token_labels = torch.stack([
                        (tokens[b] @ self.word_table(k, names[k])[1:].T).argmax(-1) + 1
                        for k in self.num_classes]).cpu()
                    sample.gt_token_labels = token_labels[:, b].cpu()
            return data_samples
        raise ValueError(f'TowerPretrainer: unknown mode {mode!r}')
