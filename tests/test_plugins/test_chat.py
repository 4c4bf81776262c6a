"""The text-only plugin: VQA answer normalisation, accuracy, and the VQA v2 adapter."""
import json

import pytest
from mmengine.registry import init_default_scope

from vlm2.plugins.chat import VQAMetric, VQAv2Dataset, normalize_answer, vqa_accuracy


@pytest.mark.parametrize('raw, norm', [
    ('Two.', '2'), ('the Red circle', 'red circle'), ('yes!', 'yes'), ('dont', "don't"),
    ('1,000', '1000'), ('3.5', '3.5'), ('left-hand', 'left hand'), ('An apple', 'apple')])
def test_official_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_accuracy_with_ten_human_answers():
    answers = ['2'] * 3 + ['3'] * 7
    # each leave-one-out subset has 2 or 3 matching '2's: (7 * 1 + 3 * 2/3) / 10
    assert vqa_accuracy('two', answers) == pytest.approx((7 * 1 + 3 * (2 / 3)) / 10)
    assert vqa_accuracy('3', answers) == 1.0
    assert vqa_accuracy('4', answers) == 0.0
    assert vqa_accuracy('The circle.', ['circle']) == 1.0


def test_metric_per_type_and_majority_baseline():
    metric = VQAMetric()
    samples = [dict(task='vqa', pred_text=p, gt_answers=[a], question_type=t) for p, a, t in [
        ('2', '2', 'count'), ('3', '2', 'count'), ('1', '1', 'count'),
        ('yes', 'yes', 'exist'), ('no', 'no', 'exist'), ('yes', 'yes', 'exist'),
        ('cat', 'x', 'other_task')]]
    samples[-1]['task'] = 'det'  # another family: ignored
    metric.process({}, samples)
    out = metric.compute_metrics(metric.results)
    assert out['accuracy'] == pytest.approx(5 / 6)
    assert out['count_accuracy'] == pytest.approx(2 / 3)
    # majority: always '2' for count (2/3), always 'yes' for exist (2/3)
    assert out['majority_baseline'] == pytest.approx(4 / 6)


def test_vqav2_adapter_reads_the_official_files(tmp_path):
    questions = dict(questions=[dict(image_id=9, question='What color?', question_id=90),
                                dict(image_id=9, question='How many?', question_id=91)])
    anns = dict(annotations=[
        dict(question_id=q, image_id=9, answer_type=t, question_type='what',
             multiple_choice_answer=a,
             answers=[dict(answer=a, answer_confidence='yes', answer_id=k) for k in range(10)])
        for q, a, t in [(90, 'red', 'other'), (91, '2', 'number')]])
    (tmp_path / 'q.json').write_text(json.dumps(questions))
    (tmp_path / 'a.json').write_text(json.dumps(anns))
    init_default_scope('vlm2')
    ds = VQAv2Dataset(ann_file=str(tmp_path / 'a.json'), question_file=str(tmp_path / 'q.json'),
                      data_prefix=dict(img_path='val2014'), pipeline=[], lazy_init=False)
    info = ds.get_data_info(1)
    assert info['img_path'] == 'val2014/COCO_val2014_000000000009.jpg'
    assert info['gt_answers'] == ['2'] * 10 and info['question_type'] == 'number'
    assert info['conversation'][0]['value'].startswith('<image>\nHow many?')
    assert info['conversation'][1] == {'from': 'gpt', 'value': '2'}
    anns['annotations'].pop()
    (tmp_path / 'a.json').write_text(json.dumps(anns))
    with pytest.raises(ValueError, match='no annotation for question_id 91'):
        VQAv2Dataset(ann_file=str(tmp_path / 'a.json'), question_file=str(tmp_path / 'q.json'),
                     pipeline=[])
