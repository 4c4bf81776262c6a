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


# ---- word alignment: the tower, projector and word embeddings of a whole MLLM -------------
LABEL_NAMES = dict(category_id=['background', 'circle', 'square'],
                   color=['background', 'red', 'blue', 'cat'])  # any word of the vocabulary


def build_word_pretrainer(**kwargs):
    init_default_scope('vlm2')
    torch.manual_seed(0)
    return MODELS.build(dict(type='TowerPretrainer', mllm=copy.deepcopy(TINY_MODEL),
                             num_classes=dict(category_id=3, color=4), **kwargs))


def word_batch(n=2):
    data = batch(n)
    for s in data['data_samples']:
        s.set_metainfo(dict(label_names=LABEL_NAMES))
    return data


def test_word_targets_sum_the_embeddings_of_each_tokens_labels():
    model = build_word_pretrainer()
    s = word_batch(1)['data_samples'][0]  # top-left 16x16 px: circle (1), 'cat' (3)
    labels = model._token_labels([s])     # one label per image token and attribute
    g = model.vision_tower.grid_size // model.vision_tower.pixel_shuffle
    assert labels.shape == (2, 1, g * g)
    target = model._word_targets([s], labels)[0]
    emb = model.llm.get_input_embeddings().weight
    ids = model.tokenizer.convert_tokens_to_ids
    first = emb[ids('circle')] + emb[ids('cat')]
    covered = labels[0, 0] > 0
    assert covered.any() and not covered.all()
    torch.testing.assert_close(target[covered.nonzero()[0, 0]], first)
    assert target[~covered].abs().sum() == 0  # background adds no word


def test_word_alignment_trains_tower_and_projector_not_the_llm():
    model = build_word_pretrainer()
    data = model.data_preprocessor(word_batch(), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_category_id', 'loss_color', 'loss_words'}
    losses['loss_words'].backward()
    assert model.projector[0].weight.grad.abs().sum() > 0
    stem = model.vision_tower.model.embeddings.patch_embedding.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.llm.parameters())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = model(**data, mode='loss')['loss_words']
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    out = model(**data, mode='predict')
    # the trained tokens name their labels' words again
    fg = out[0].gt_token_labels > 0
    assert torch.equal(out[0].pred_token_labels[fg], out[0].gt_token_labels[fg])
    from vlm2.evaluation import PatchAccuracy
    metric = PatchAccuracy()
    metric.process({}, [s.to_dict() for s in out])
    scores = metric.compute_metrics(metric.results)
    assert scores['category_id_word_fg_acc'] == scores['color_word_fg_acc'] == 1.0
    assert set(scores) == {'category_id_fg_acc', 'color_fg_acc', 'category_id_word_fg_acc',
                           'color_word_fg_acc'}


def test_mllm_loads_tower_projector_and_words_from_the_word_checkpoint(tmp_path):
    pre = build_word_pretrainer()
    path = str(tmp_path / 'words.pth')
    torch.save(dict(state_dict=pre.state_dict()), path)
    torch.manual_seed(1)
    mllm = MODELS.build(dict(copy.deepcopy(TINY_MODEL),
                             init_cfg=dict(type='Pretrained', checkpoint=path)))
    assert not torch.equal(mllm.projector[0].weight, pre.projector[0].weight)
    mllm.init_weights()
    for name in ('vision_tower', 'projector', 'llm'):
        for k, v in getattr(pre, name).state_dict().items():
            assert torch.equal(getattr(mllm, name).state_dict()[k], v), f'{name}.{k}'


def test_word_alignment_errors_name_what_is_missing():
    with pytest.raises(ValueError, match='exactly one of model.vision_tower'):
        MODELS.build(dict(type='TowerPretrainer', vision_tower=copy.deepcopy(TOWER),
                          mllm=copy.deepcopy(TINY_MODEL), num_classes=dict(color=4)))
    with pytest.raises(ValueError, match='exactly one of model.vision_tower'):
        MODELS.build(dict(type='TowerPretrainer', num_classes=dict(color=4)))
    model = build_word_pretrainer()
    data = model.data_preprocessor(word_batch(), True)
    data['data_samples'][1].set_metainfo(dict(label_names=dict(
        LABEL_NAMES, color=['background', 'red', 'teal', 'cat'])))
    with pytest.raises(ValueError, match="label_names.color: 'teal' is not in the tokenizer"):
        model(**data, mode='loss')
    data = model.data_preprocessor(batch(), True)  # no label_names
    with pytest.raises(ValueError, match='0: model.mllm aligns image tokens'):
        model(**data, mode='loss')
