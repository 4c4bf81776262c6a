"""Dense tower pretraining and loading its checkpoint into the MLLM's tower."""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement

from conftest import TINY_MODEL
from vlm2.registry import MODELS

TOWER = dict(TINY_MODEL['vision_tower'])  # 32 px, 8-px patches: a 4x4 grid


def build_pretrainer(**kwargs):
    init_default_scope('vlm2')
    torch.manual_seed(0)
    return MODELS.build(dict(type='TowerPretrainer', vision_tower=copy.deepcopy(TOWER),
                             num_classes=dict(category_id=3, color=4), **kwargs))


def batch(n=2):
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(n):
        maps = torch.zeros(2, 32, 32, dtype=torch.long)
        maps[0, :16, :16], maps[1, :16, :16] = 1 + i, 3 - i
        s = BaseDataElement(metainfo=dict(attributes=('category_id', 'color'), img_path=f'{i}'))
        s.gt_label_maps = maps
        samples.append(s)
    images = [torch.randint(0, 255, (1, 3, 32, 32), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    return dict(inputs=images, data_samples=samples)


def test_patch_targets_take_the_majority_label():
    model = build_pretrainer()
    s = batch(1)['data_samples'][0]
    s.gt_label_maps[:, :8, :8] = 0
    s.gt_label_maps[:, :5, :8] = 2   # 5 of 8 rows of patch (0, 0): label 2 wins
    targets = model.patch_targets([s])  # (attributes, batch, 16 patches)
    assert targets.shape == (2, 1, 16)
    assert targets[0, 0, 0] == 2 and targets[0, 0, 1] == 1 and targets[0, 0, 15] == 0


def test_loss_reaches_the_tower_and_falls():
    model = build_pretrainer()
    data = model.data_preprocessor(batch(), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_category_id', 'loss_color'}
    sum(losses.values()).backward()
    stem = model.vision_tower.model.embeddings.patch_embedding.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = sum(model(**data, mode='loss').values())
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    out = model(**data, mode='predict')
    assert out[0].pred_patch_labels.shape == out[0].gt_patch_labels.shape == (2, 16)


def test_mismatched_attributes_or_labels_raise():
    model = build_pretrainer()
    data = model.data_preprocessor(batch(), True)
    data['data_samples'][0].set_metainfo(dict(attributes=('color', 'category_id')))
    with pytest.raises(ValueError, match='model.num_classes names'):
        model(**data, mode='loss')
    data = model.data_preprocessor(batch(), True)
    data['data_samples'][0].gt_label_maps[1, 0, 0] = 4
    with pytest.raises(ValueError, match=r'label 4 does not fit model.num_classes \(4'):
        model(**data, mode='loss')
    with pytest.raises(ValueError, match='frozen'):
        MODELS.build(dict(type='TowerPretrainer', vision_tower=dict(TOWER, frozen=True),
                          num_classes=dict(color=4)))


def test_patch_accuracy_counts_foreground_patches_only():
    from vlm2.evaluation import PatchAccuracy
    s = BaseDataElement(metainfo=dict(attributes=('color',)))
    s.gt_patch_labels = torch.tensor([[0, 0, 1, 2]])
    s.pred_patch_labels = torch.tensor([[0, 3, 1, 1]])
    metric = PatchAccuracy()
    metric.process({}, [s.to_dict()])  # as the evaluator hands them over
    assert metric.compute_metrics(metric.results) == dict(color_fg_acc=0.5)


def test_mllm_tower_loads_the_pretrained_checkpoint_strictly(tmp_path):
    pre = build_pretrainer()
    path = str(tmp_path / 'tower.pth')
    torch.save(dict(state_dict=pre.state_dict()), path)
    tower = dict(copy.deepcopy(TOWER), init_cfg=dict(type='Pretrained', checkpoint=path))
    torch.manual_seed(1)
    mllm = MODELS.build(dict(copy.deepcopy(TINY_MODEL), vision_tower=tower))
    key = 'model.encoder.layers.0.mlp.fc1.weight'
    assert not torch.equal(mllm.vision_tower.state_dict()[key],
                           pre.vision_tower.state_dict()[key])
    mllm.init_weights()
    for k, v in pre.vision_tower.state_dict().items():
        assert torch.equal(mllm.vision_tower.state_dict()[k], v), k

    missing = dict(tower, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'no.pth')))
    with pytest.raises(FileNotFoundError, match='model.vision_tower.init_cfg.checkpoint'):
        MODELS.build(missing).init_weights()
    wide = copy.deepcopy(tower)
    wide['config']['hidden_size'] = 48
    with pytest.raises(RuntimeError, match='does not fit this tower'):
        MODELS.build(wide).init_weights()
