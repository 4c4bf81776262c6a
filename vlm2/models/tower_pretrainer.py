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
    it a start. Only the tower is kept: its checkpoint keys are ``vision_tower.*``, as in
    :class:`VisionLLMv2`, so ``VisionTower(init_cfg=dict(type='Pretrained', ...))`` or
    ``load_from`` reads it.

    Args:
        vision_tower: a :class:`VisionTower` config (trainable: ``frozen=False``).
        num_classes: attribute → number of labels including background, in the dataset's
            attribute order (:class:`~vlm2.datasets.InstanceAttributeDataset`).
    """

    def __init__(self, vision_tower: dict, num_classes: dict[str, int],
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(type='VLMDataPreprocessor'),
                         init_cfg=init_cfg)
        self.vision_tower = MODELS.build(vision_tower)
        if self.vision_tower.frozen:
            raise ValueError('model.vision_tower.frozen=True: a frozen tower cannot be '
                             'pretrained; set frozen=False')
        self.num_classes = dict(num_classes)
        self.heads = nn.ModuleDict({k: nn.Linear(self.vision_tower.hidden_size, n)
                                    for k, n in self.num_classes.items()})

    def patch_targets(self, data_samples: list[BaseDataElement]) -> Tensor:
        """(attributes, batch, patches): the majority label of each patch's pixels."""
        g, targets = self.vision_tower.grid_size, []
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

    def forward(self, inputs: dict, data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        pixel_values = inputs['pixel_values']
        if pixel_values is None or any(n != 1 for n in inputs['num_tiles']):
            raise ValueError('TowerPretrainer takes exactly one tile per image')
        feats = self.vision_tower.hidden_states(pixel_values)[self.vision_tower.select_layer]
        logits = {k: head(feats).float() for k, head in self.heads.items()}
        if mode == 'tensor':
            return logits
        targets = self.patch_targets(data_samples).to(feats.device)
        if mode == 'loss':
            return {f'loss_{k}': F.cross_entropy(lg.flatten(0, 1), t.flatten())
                    for (k, lg), t in zip(logits.items(), targets)}
        if mode == 'predict':
            preds = torch.stack([lg.argmax(-1) for lg in logits.values()], 1)  # (B, A, P)
            for sample, pred, target in zip(data_samples, preds, targets.transpose(0, 1)):
                sample.pred_patch_labels = pred.cpu()
                sample.gt_patch_labels = target.cpu()
            return data_samples
        raise ValueError(f'TowerPretrainer: unknown mode {mode!r}')
