"""COCO instances as per-pixel attribute labels (the targets of tower pretraining)."""
import json

import cv2
import numpy as np
import pytest
from mmengine.registry import init_default_scope

from vlm2.datasets import InstanceAttributeDataset

PIPELINE = [dict(type='LoadImageIfAny'), dict(type='DynamicTiles', tile_size=16, max_tiles=1),
            dict(type='PackInstanceLabelMaps')]
COLORS = ['red', 'blue']


def box(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def write_coco(root, anns):
    cv2.imwrite(str(root / 'a.png'), np.full((32, 32, 3), 200, np.uint8))
    coco = dict(images=[dict(id=1, file_name='a.png', height=32, width=32)],
                categories=[dict(id=3, name='square'), dict(id=1, name='circle')],
                annotations=[dict(id=i + 1, image_id=1, iscrowd=0, **a)
                             for i, a in enumerate(anns)])
    (root / 'instances.json').write_text(json.dumps(coco))
    return str(root / 'instances.json')


def build(root, anns, **kwargs):
    init_default_scope('vlm2')
    return InstanceAttributeDataset(ann_file=write_coco(root, anns), data_root='',
                                    data_prefix=dict(img_path=str(root)),
                                    attributes=dict(category_id=None, color=COLORS),
                                    pipeline=PIPELINE, **kwargs)


def test_label_maps_paint_instances_in_order(tmp_path):
    ds = build(tmp_path, [
        dict(category_id=3, color='blue', bbox=[0, 0, 16, 16], segmentation=box(0, 0, 16, 16)),
        dict(category_id=1, color='red', bbox=[8, 8, 16, 16], segmentation=box(8, 8, 16, 16))])
    assert ds.label_names == dict(category_id=['background', 'circle', 'square'],
                                  color=['background', 'red', 'blue'])
    out = ds[0]
    maps = out['data_samples'].gt_label_maps  # resized 32 -> 16 px
    assert out['inputs'].shape == (1, 3, 16, 16) and maps.shape == (2, 16, 16)
    assert maps[:, 1, 1].tolist() == [2, 2]      # square (id 3 -> 2nd category), blue
    assert maps[:, 7, 7].tolist() == [1, 1]      # the later circle covers the overlap
    assert maps[:, 14, 2].tolist() == [0, 0]     # background
    assert out['data_samples'].metainfo['attributes'] == ('category_id', 'color')


def test_unknown_value_or_missing_key_names_the_annotation(tmp_path):
    with pytest.raises(ValueError, match=r"annotation 1 has color='teal'"):
        build(tmp_path, [dict(category_id=3, color='teal', bbox=[0, 0, 4, 4],
                              segmentation=box(0, 0, 4, 4))])
    with pytest.raises(KeyError, match=r"annotation 1 has no 'color'"):
        build(tmp_path, [dict(category_id=3, bbox=[0, 0, 4, 4], segmentation=box(0, 0, 4, 4))])
    with pytest.raises(ValueError, match='attributes.size: list its values'):
        InstanceAttributeDataset(ann_file='x.json', attributes=dict(size=None), lazy_init=True)


def test_degenerate_annotations_are_counted(tmp_path):
    ds = build(tmp_path, [
        dict(category_id=3, color='red', bbox=[0, 0, 0, 4], segmentation=box(0, 0, 0, 4)),
        dict(category_id=1, color='red', bbox=[0, 0, 8, 8], segmentation=box(0, 0, 8, 8))])
    assert ds.skipped == dict(crowd=0, degenerate=1)
    assert [i['id'] for i in ds.get_data_info(0)['instances']] == [2]
