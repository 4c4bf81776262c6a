"""COCO instances with the attributes a vision tower learns to see, for dense pretraining."""
import os.path as osp
from typing import Optional, Sequence

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from vlm2.registry import DATASETS
from .coco_instances import load_coco_instances


@DATASETS.register_module()
class InstanceAttributeDataset(BaseDataset):
    """Images of a COCO instances file, each instance with one label per attribute.

    :class:`~vlm2.datasets.PackInstanceLabelMaps` paints the labels into per-pixel maps:
    the targets of :class:`~vlm2.models.TowerPretrainer`. Label 0 is background; the values
    of an attribute count from 1 in the order given.

    Args:
        attributes: annotation key → its values in label order. ``category_id`` may be
            ``None``: the file's categories in id order. Other keys (ShapesWorld's ``color``)
            list their values, so train and test files agree on the labels.
        ann_file / data_root / data_prefix / pipeline / test_mode: as in MMEngine, with
            ``data_prefix=dict(img_path=...)`` the image folder.
    """

    def __init__(self, *args, attributes: Optional[dict[str, Optional[Sequence]]] = None,
                 **kwargs) -> None:
        self.attributes = dict(attributes or dict(category_id=None))
        for key, values in self.attributes.items():
            if values is None and key != 'category_id':
                raise ValueError(f'attributes.{key}: list its values in label order (only '
                                 'category_id can be read from the file)')
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        images, anns, cats = load_coco_instances(self.ann_file)
        values = {k: list(sorted(cats) if v is None else v) for k, v in self.attributes.items()}
        self.label_names = {k: ['background'] + [cats[c] if k == 'category_id' else str(c)
                                                 for c in v] for k, v in values.items()}
        infos, crowd, degenerate = [], 0, 0
        for image_id in sorted(images):
            image = images[image_id]
            instances = []
            for ann in anns.get(image_id, []):
                if ann.get('iscrowd', 0):
                    crowd += 1
                    continue
                _, _, w, h = ann['bbox']
                if w <= 0 or h <= 0 or not ann.get('segmentation'):
                    degenerate += 1
                    continue
                labels = []
                for key, vals in values.items():
                    if key not in ann:
                        raise KeyError(f'{self.ann_file}: annotation {ann["id"]} has no '
                                       f'{key!r} (attributes.{key})')
                    if ann[key] not in vals:
                        raise ValueError(f'{self.ann_file}: annotation {ann["id"]} has '
                                         f'{key}={ann[key]!r}, not one of attributes.{key} '
                                         f'{vals}')
                    labels.append(vals.index(ann[key]) + 1)
                instances.append(dict(id=ann['id'], segmentation=ann['segmentation'],
                                      labels=labels))
            infos.append(dict(img_path=osp.join(self.data_prefix.get('img_path', ''),
                                                image['file_name']),
                              sample_id=image_id, height=image['height'], width=image['width'],
                              instances=instances, attributes=tuple(values)))
        self.skipped = dict(crowd=crowd, degenerate=degenerate)
        if crowd or degenerate:
            print_log(f'{self.ann_file}: skipped {crowd} crowd and {degenerate} degenerate '
                      '(empty box or segmentation) annotations', logger='current')
        return infos
