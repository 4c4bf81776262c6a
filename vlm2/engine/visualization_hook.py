"""Writes a picture of every test prediction (``tools/test.py --show-dir``)."""
import os
import os.path as osp
from typing import Optional, Sequence

import mmcv
from mmengine.hooks import Hook

from vlm2.apis.visualize import draw_prediction
from vlm2.registry import HOOKS


@HOOKS.register_module()
class PredictionPictureHook(Hook):
    """Saves ``<show_dir>/<sample_id>.png`` for each test sample: image, decoder drawings
    and reply."""

    def __init__(self, show_dir: str) -> None:
        self.show_dir = show_dir

    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs: Optional[Sequence] = None) -> None:
        out_dir = osp.join(runner.work_dir, self.show_dir) if not osp.isabs(self.show_dir) \
            else self.show_dir
        os.makedirs(out_dir, exist_ok=True)
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        for sample in outputs or []:
            path = sample.metainfo.get('img_path')
            image = mmcv.imread(path, channel_order='rgb') if path else None
            name = str(sample.metainfo.get('sample_id', batch_idx)).replace('/', '_')
            mmcv.imwrite(mmcv.rgb2bgr(draw_prediction(model, image, sample)),
                         osp.join(out_dir, f'{name}.png'))
