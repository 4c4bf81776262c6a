"""The NYU Depth v2 / KITTI layout: RGB images, depth maps and a list file."""
import os.path as osp
from typing import Sequence

from mmengine.fileio import get_text
from mmengine.logging import print_log

from vlm2.datasets import VLMBaseDataset
from vlm2.registry import DATASETS

PROMPTS = ('Estimate the depth of the image.', 'What is the depth map of this image?',
           'Predict the depth of each pixel.', 'Show the depth of the scene.')
ANSWER = 'the depth map[DEPTH]'


def _under(root: str, path: str) -> str:
    """A list-file path under its folder; NYU's lists write ``/kitchen/rgb_1.jpg`` relative
    to the data root, so a leading ``/`` is dropped when there is a folder."""
    return osp.join(root, path.lstrip('/')) if root else path


@DATASETS.register_module()
class NYUDepthDataset(VLMBaseDataset):
    """Depth samples from a BTS-style list file (as for NYU Depth v2 and KITTI Eigen).

    Each line is ``<rgb path> <depth path> [focal]``, relative to ``data_prefix['img_path']``
    and ``data_prefix['depth_path']`` (absolute when there is no prefix nor data root). A
    depth path is a 16-bit PNG (``depth_scale`` units per metre: 1000 for NYU's millimetres,
    256 for KITTI) or a ``.npy`` in metres. Lines whose depth is ``None`` (KITTI frames
    without ground truth) are skipped and counted.

    Data infos: ``img_path``, ``depth_path``, ``depth_scale``, ``focal`` and a conversation
    ``<image>\\n<prompt>`` → ``the depth map[DEPTH]`` (prompts cycle through ``prompts``).
    """

    def __init__(self, *args, depth_scale: float = 1000.0, prompts: Sequence[str] = PROMPTS,
                 answer: str = ANSWER, task: str = 'depth', **kwargs) -> None:
        self.depth_scale = depth_scale
        self.prompts = tuple(prompts)
        self.answer = answer
        kwargs.setdefault('data_prefix', dict(img_path='', depth_path=''))
        super().__init__(*args, task=task, **kwargs)

    def load_data_list(self) -> list[dict]:
        try:
            lines = get_text(self.ann_file).splitlines()
        except FileNotFoundError as e:
            raise FileNotFoundError(f'depth list file not found: {self.ann_file}') from e
        infos, skipped = [], 0
        img_root = self.data_prefix.get('img_path', '')
        depth_root = self.data_prefix.get('depth_path', '')
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3):
                raise ValueError(f'{self.ann_file} line {n}: expected "<rgb> <depth> [focal]", '
                                 f'got {line!r}')
            if parts[1] == 'None':
                skipped += 1
                continue
            prompt = self.prompts[len(infos) % len(self.prompts)]
            infos.append(dict(
                sample_id=osp.splitext(parts[0].lstrip('/'))[0],
                img_path=_under(img_root, parts[0]),
                depth_path=_under(depth_root, parts[1]),
                depth_scale=self.depth_scale,
                focal=float(parts[2]) if len(parts) == 3 else None,
                conversation=[{'from': 'human', 'value': f'<image>\n{prompt}'},
                              {'from': 'gpt', 'value': self.answer}]))
        if skipped:
            print_log(f'{self.ann_file}: skipped {skipped} line(s) without depth (None)',
                      logger='current')
        return infos
