"""The base of every vlm2 dataset adapter: one task family, errors that name the sample."""
import os.path as osp
from typing import Optional

from mmengine.dataset import BaseDataset

from vlm2.registry import DATASETS


@DATASETS.register_module()
class VLMBaseDataset(BaseDataset):
    """A dataset of one task family, read from source annotations by :meth:`load_data_list`.

    Adapters (plugins' ``adapters.py``) subclass it and turn their format into data infos
    holding at least ``conversation`` (LLaVA turns) and ``img_path`` (or None), plus whatever
    their decoder and metric read. The task family drives batching and metric selection.

    Args:
        task: the task family of every sample (``'vqa'``, ``'det'``, ...).
        ann_file / data_root / data_prefix / pipeline / test_mode: as in MMEngine, with
            ``data_prefix=dict(img_path=...)`` the image folder.
    """

    def __init__(self, *args, task: str = 'chat', **kwargs) -> None:
        self.task = task
        kwargs.setdefault('data_prefix', dict(img_path=''))
        super().__init__(*args, **kwargs)

    def get_task(self, idx: int) -> str:
        """Task family of sample ``idx`` without loading it (used by the batch sampler)."""
        return self.task

    def image_path(self, name: Optional[str]) -> Optional[str]:
        """The image path of an annotation's file name, under ``data_prefix['img_path']``."""
        if not name:
            return None
        return osp.join(self.data_prefix.get('img_path', ''), name)

    def prepare_data(self, idx: int):
        info = self.get_data_info(idx)
        info['task'] = self.get_task(idx)
        info.setdefault('ann_file', self.ann_file)
        try:
            return self.pipeline(info)
        except Exception as e:
            where = f'{self.ann_file} sample {info.get("sample_id", idx)}'
            if where in str(e):
                raise
            message = f'{where} (image {info.get("img_path")}): {e}'
            try:
                wrapped = type(e)(message)
            except Exception:  # exception types whose constructor takes other arguments
                wrapped = RuntimeError(message)
            raise wrapped from e
