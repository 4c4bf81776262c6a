"""Dataset adapters of the text-only tasks: conversations, VQA, captions."""
import json
import os.path as osp

from vlm2.datasets import LLaVADataset, VLMBaseDataset, load_json_records
from vlm2.registry import DATASETS

# LLaVA-1.5's short-answer instruction for VQA benchmarks.
SHORT_ANSWER = 'Answer the question using a single word or phrase.'


@DATASETS.register_module()
class VQADataset(LLaVADataset):
    """LLaVA-format question-answer records, evaluated on the last answer.

    A record may carry ``answers`` (all acceptable answers) and ``question_type``; without
    ``answers`` the last gpt turn is the answer. In test mode the last answer is what the
    model must generate.
    """

    def load_data_list(self) -> list[dict]:
        infos = super().load_data_list()
        for info in infos:
            turns = info['conversation']
            if not turns or turns[-1].get('from') != 'gpt':
                raise ValueError(f'{self.ann_file} id={info["sample_id"]}: a VQA record ends '
                                 'with the answer (a gpt turn)')
            answers = info.get('answers') or [turns[-1]['value']]
            info['gt_answers'] = [str(a) for a in answers]
            info.setdefault('question_type', 'all')
        return infos


@DATASETS.register_module()
class VQAv2Dataset(VLMBaseDataset):
    """The official VQA v2 files: ``questions`` JSON and (train/val) ``annotations`` JSON.

    Args:
        ann_file: the annotations file (``v2_mscoco_val2014_annotations.json``); may be
            empty for test-dev, which has no answers.
        question_file: the questions file (``v2_OpenEnded_mscoco_val2014_questions.json``).
        img_name: image file name format, ``COCO_val2014_{image_id:012d}.jpg``.
        prompt: appended to the question (LLaVA-1.5's short-answer instruction).
    """

    def __init__(self, *args, question_file: str, img_name: str = 'COCO_val2014_{:012d}.jpg',
                 prompt: str = SHORT_ANSWER, task: str = 'vqa', **kwargs) -> None:
        self.question_file = question_file
        self.img_name = img_name
        self.prompt = prompt
        super().__init__(*args, task=task, **kwargs)

    def _load(self, path: str, key: str) -> list:
        try:
            with open(path) as f:
                return json.load(f)[key]
        except FileNotFoundError as e:
            raise FileNotFoundError(f'VQA v2 file not found: {path}') from e
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f'{path}: not a VQA v2 file with a "{key}" list ({e!r})') from e

    def load_data_list(self) -> list[dict]:
        questions = self._load(self.question_file, 'questions')
        annotations = {}
        if self.ann_file and osp.isfile(self.ann_file):
            annotations = {a['question_id']: a for a in self._load(self.ann_file, 'annotations')}
        elif self.ann_file:
            raise FileNotFoundError(f'VQA v2 annotation file not found: {self.ann_file}')
        infos = []
        for q in questions:
            qid = q['question_id']
            ann = annotations.get(qid)
            if annotations and ann is None:
                raise ValueError(f'{self.ann_file}: no annotation for question_id {qid} of '
                                 f'{self.question_file}')
            turns = [dict(value=f'<image>\n{q["question"]}\n{self.prompt}', **{'from': 'human'})]
            info = dict(sample_id=str(qid), img_path=self.image_path(
                self.img_name.format(q['image_id'])), conversation=turns)
            if ann is not None:
                turns.append({'from': 'gpt', 'value': ann['multiple_choice_answer']})
                info['gt_answers'] = [a['answer'] for a in ann['answers']]
                info['question_type'] = ann.get('answer_type', 'all')
            infos.append(info)
        return infos
