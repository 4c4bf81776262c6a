"""LLaVA-format conversation data (also what xtuner reads), as it is on disk."""
import json

from mmengine.fileio import get_text

from vlm2.registry import DATASETS
from .base_dataset import VLMBaseDataset


def load_json_records(path: str) -> list[dict]:
    """A JSON list or a JSONL file of records; errors name the file and line."""
    try:
        text = get_text(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f'annotation file not found: {path}') from e
    try:
        if path.endswith('.jsonl'):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e})') from e
    if not isinstance(records, list):
        raise ValueError(f'{path}: expected a list of records, got {type(records).__name__}')
    return records


@DATASETS.register_module()
class LLaVADataset(VLMBaseDataset):
    """Records ``{"id", "image"?, "conversations": [{"from", "value"}, ...]}``.

    Extra keys of a record are kept in the data info (e.g. ``question_type``).
    """

    def load_data_list(self) -> list[dict]:
        infos = []
        for i, rec in enumerate(load_json_records(self.ann_file)):
            if not isinstance(rec, dict) or 'conversations' not in rec:
                raise ValueError(f'{self.ann_file}: record {i} has no "conversations" list')
            extra = {k: v for k, v in rec.items() if k not in ('id', 'image', 'conversations')}
            infos.append(dict(extra, sample_id=str(rec.get('id', i)),
                              img_path=self.image_path(rec.get('image')),
                              conversation=rec['conversations']))
        return infos
