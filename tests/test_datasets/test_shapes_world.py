"""ShapesWorld: determinism, format validity and consistency of every written file."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from vlm2.datasets.shapes_world import COLORS, SHAPES, WORDS, generate_shapes_world
from vlm2.datasets.shapes_world.scene import dilate
from vlm2.datasets.shapes_world.vocab import PLURALS, SIZES, tokenize

NUM_TRAIN, NUM_VAL, SIZE = 8, 4, 96
SPLITS = ('train', 'val')


@pytest.fixture(scope='module')
def world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp('shapes_world')
    meta = generate_shapes_world(str(out), seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL,
                                 image_size=SIZE)
    return out, meta


def _json(out: Path, name: str):
    return json.loads((out / 'annotations' / name).read_text())


def _jsonl(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / 'annotations' / name).read_text().splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('kwargs, name', [
    ({'num_train': 0}, 'num_train'), ({'num_val': 0}, 'num_val'),
    ({'image_size': 31}, 'image_size'), ({'seed': -1}, 'seed'),
    ({'max_shapes': 0}, 'max_shapes'), ({'max_shapes': 5}, 'max_shapes')])
def test_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_shapes_world(str(tmp_path), **kwargs)


def test_deterministic(tmp_path):
    kw = dict(num_train=4, num_val=2, image_size=64)
    generate_shapes_world(str(tmp_path / 'a'), seed=3, **kw)
    generate_shapes_world(str(tmp_path / 'b'), seed=3, **kw)
    generate_shapes_world(str(tmp_path / 'c'), seed=4, **kw)
    a, b, c = (_files(tmp_path / d) for d in 'abc')
    assert a == b
    assert a.keys() == c.keys()
    assert a['annotations/instances_train.json'] != c['annotations/instances_train.json']
    assert a['images/train/000000.png'] != c['images/train/000000.png']


def test_max_shapes_caps_every_scene_and_is_recorded(tmp_path):
    meta = generate_shapes_world(str(tmp_path), seed=0, num_train=12, num_val=2, image_size=64,
                                 max_shapes=1)
    counts = np.bincount([a['image_id'] for a in
                          _json(tmp_path, 'instances_train.json')['annotations']])
    assert meta['max_shapes'] == 1 and set(counts[1:]) == {1}
    edits = _jsonl(tmp_path, 'edits_train.jsonl')
    assert len(edits) == 12 and {e['edit_type'] for e in edits} <= {'add', 'recolor', 'remove'}


@pytest.mark.parametrize('split', SPLITS)
def test_instances(world, split):
    out, _ = world
    coco = COCO(str(out / 'annotations' / f'instances_{split}.json'))
    assert sorted(coco.getCatIds()) == [1, 3, 5, 7, 9]  # non-contiguous on purpose
    assert len(coco.getImgIds()) == (NUM_TRAIN if split == 'train' else NUM_VAL)
    kinds = set()
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        pixels = np.asarray(Image.open(out / 'images' / split / info['file_name']))
        assert pixels.shape == (info['height'], info['width'], 3) == (SIZE, SIZE, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 4
        union = np.zeros((SIZE, SIZE), np.int32)
        for ann in anns:
            kinds.add('polygon' if isinstance(ann['segmentation'], list) else 'rle')
            mask = coco.annToMask(ann).astype(bool)
            assert mask.sum() == ann['area'] > 0, ann['id']
            ys, xs = np.nonzero(mask)
            box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert np.allclose(box, ann['bbox'], atol=1), (ann['id'], box, ann['bbox'])
            # the picture shows the annotated colour under the visible mask, and a
            # different one all around it (so the mask can be read off the image)
            assert (pixels[mask] == COLORS[ann['color']]).all(), ann['id']
            ring = dilate(mask) & ~mask
            assert not (pixels[ring] == COLORS[ann['color']]).all(-1).any(), ann['id']
            assert ann['size'] in SIZES and ann['iscrowd'] == 0
            union += mask
        assert union.max() <= 1  # visible masks of one image never overlap
    assert kinds == {'polygon', 'rle'}


@pytest.mark.parametrize('split', SPLITS)
def test_keypoints(world, split):
    out, _ = world
    data = _json(out, f'keypoints_{split}.json')
    cats = {c['id']: c for c in data['categories']}
    assert len({len(c['keypoints']) for c in cats.values()}) > 1  # variable-length sets
    for cat in cats.values():
        assert all(1 <= i <= len(cat['keypoints']) for link in cat['skeleton'] for i in link)
    assert len(data['annotations']) == len(_json(out, f'instances_{split}.json')['annotations'])
    for ann in data['annotations']:
        kpts = np.asarray(ann['keypoints'], float).reshape(-1, 3)
        assert len(ann['keypoints']) == 3 * len(cats[ann['category_id']]['keypoints'])
        assert ann['num_keypoints'] == int((kpts[:, 2] > 0).sum())
        x, y, w, h = ann['bbox']
        for kx, ky, v in kpts[kpts[:, 2] == 2]:
            assert x - 2 <= kx <= x + w + 2 and y - 2 <= ky <= y + h + 2, (ann['id'], kx, ky)


@pytest.mark.parametrize('split', SPLITS)
def test_refs(world, split):
    out, meta = world
    anns = {a['id']: a for a in _json(out, f'instances_{split}.json')['annotations']}
    cat_names = {c['id']: c['name'] for c in _json(out, f'instances_{split}.json')['categories']}
    refs = _json(out, f'refs_{split}.json')
    assert len(refs) + meta['skipped_refs'][split] == len(anns)
    sent_ids = [s['sent_id'] for r in refs for s in r['sentences']]
    assert len(sent_ids) == len(set(sent_ids))
    for ref in refs:
        ann = anns[ref['ann_id']]
        assert ref['category_id'] == ann['category_id'] and ref['image_id'] == ann['image_id']
        assert ref['split'] == split and 1 <= len(ref['sentences']) <= 2
        for sent in ref['sentences']:
            assert sent['sent'] and sent['tokens'] == tokenize(sent['sent'])
            assert sent['tokens'][0] == 'the'
        # a purely attribute-based expression matches exactly one shape of the image
        toks = ref['sentences'][0]['tokens']
        if all(t == 'the' or t in SHAPES or t in COLORS or t in SIZES for t in toks):
            same_image = [a for a in anns.values() if a['image_id'] == ann['image_id']]
            assert [a['id'] for a in same_image if _matches(a, toks, cat_names)] == [ann['id']]


def _filters(text: str) -> dict:
    toks = tokenize(text)
    kind = next((k for k in SHAPES if k in toks or PLURALS[k] in toks), None)
    color = next((t for t in toks if t in COLORS), None)
    size = next((t for t in toks if t in SIZES), None)
    return {'kind': kind, 'color': color, 'size': size}


def _matches(ann: dict, text_or_tokens, cat_names: dict) -> bool:
    text = text_or_tokens if isinstance(text_or_tokens, str) else ' '.join(text_or_tokens)
    f = _filters(text)
    return ((f['kind'] is None or cat_names[ann['category_id']] == f['kind'])
            and (f['color'] is None or ann['color'] == f['color'])
            and (f['size'] is None or ann['size'] == f['size']))


def test_llava_val_answers_match_scene(world):
    out, _ = world
    inst = _json(out, 'instances_val.json')
    cat_names = {c['id']: c['name'] for c in inst['categories']}
    file_to_id = {i['file_name']: i['id'] for i in inst['images']}
    captions = {c['image']: c['caption'] for c in _jsonl(out, 'captions_val.jsonl')}
    records = _json(out, 'llava_val.json')
    assert {r['question_type'] for r in records} >= {'count', 'exist', 'caption'}
    for rec in records:
        human, gpt = rec['conversations']
        assert human['from'] == 'human' and human['value'].startswith('<image>\n')
        assert gpt['from'] == 'gpt' and rec['answers'] == [gpt['value']]
        question, answer = human['value'][len('<image>\n'):], gpt['value']
        image_id = file_to_id[rec['image'].split('/', 1)[1]]
        matching = [a for a in inst['annotations']
                    if a['image_id'] == image_id and _matches(a, question, cat_names)]
        qtype = rec['question_type']
        if qtype == 'count':
            assert answer == str(len(matching)), question
        elif qtype == 'exist':
            assert answer == ('yes' if matching else 'no'), question
        elif qtype in ('color', 'position'):
            assert len(matching) == 1, question
            assert answer == matching[0][qtype], question
        else:
            assert qtype == 'caption' and answer == captions[rec['image']]
        assert answer == answer.lower() and not answer.endswith('.')


def test_llava_train_and_captions(world):
    out, _ = world
    records = _json(out, 'llava_train.json')
    assert len(records) == NUM_TRAIN
    for rec in records:
        assert (out / 'images' / rec['image']).is_file()
        turns = rec['conversations']
        assert 6 <= len(turns) <= 12 and len(turns) % 2 == 0
        assert [t['from'] for t in turns] == ['human', 'gpt'] * (len(turns) // 2)
        assert turns[0]['value'].startswith('<image>\n')
        assert sum('<image>' in t['value'] for t in turns) == 1
    inst = _json(out, 'instances_train.json')
    cat_names = {c['id']: c['name'] for c in inst['categories']}
    for pair, img in zip(_jsonl(out, 'captions_train.jsonl'), inst['images']):
        assert pair['image'] == f"train/{img['file_name']}"
        anns = [a for a in inst['annotations'] if a['image_id'] == img['id']]
        for a in anns:  # every shape is listed with its attributes
            phrase = f"{a['size']} {a['color']} {cat_names[a['category_id']]}"
            assert pair['caption'].count(phrase) == sum(
                f"{b['size']} {b['color']} {cat_names[b['category_id']]}" == phrase
                for b in anns)


@pytest.mark.parametrize('split', SPLITS)
def test_edits(world, split):
    out, _ = world
    edits = _jsonl(out, f'edits_{split}.jsonl')
    assert edits and {e['edit_type'] for e in edits} <= {'recolor', 'remove', 'add'}
    for e in edits:
        src = np.asarray(Image.open(out / 'images' / e['source']))
        tgt = np.asarray(Image.open(out / 'images' / e['target']))
        assert src.shape == tgt.shape == (SIZE, SIZE, 3)
        assert (src != tgt).any(), e
        assert e['instruction']


def test_words_cover_all_text(world):
    out, _ = world
    texts = []
    for split in SPLITS:
        for rec in _json(out, f'llava_{split}.json'):
            texts += [t['value'].replace('<image>\n', '') for t in rec['conversations']]
        texts += [s['sent'] for r in _json(out, f'refs_{split}.json') for s in r['sentences']]
        texts += [c['caption'] for c in _jsonl(out, f'captions_{split}.jsonl')]
        texts += [e['instruction'] for e in _jsonl(out, f'edits_{split}.jsonl')]
        for cat in _json(out, f'keypoints_{split}.json')['categories']:
            texts += [cat['name'], cat['supercategory'], *cat['keypoints']]
    vocab = set(WORDS)
    missing = {tok for t in texts for tok in tokenize(t)} - vocab
    assert not missing
    assert {'?', '.', ','} <= vocab and all(w == w.lower() for w in WORDS)


def test_meta_counts(world):
    out, meta = world
    assert json.loads((out / 'meta.json').read_text()) == meta
    assert meta['num_train'] == NUM_TRAIN and meta['image_size'] == SIZE
    for name, n in meta['counts'].items():
        if name.endswith('.jsonl'):
            assert len(_jsonl(out, name)) == n
        else:
            data = _json(out, name)
            assert len(data['annotations'] if isinstance(data, dict) else data) == n
