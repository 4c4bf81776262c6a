"""VQA accuracy with the official answer normalisation, and exact match."""
import re
from collections import Counter, defaultdict
from typing import Sequence

from mmengine.logging import print_log

from vlm2.evaluation import TaskMetric
from vlm2.registry import METRICS

# The official VQA evaluation's normalisation (vqaEval.py of the VQA API).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've"}
NUMBERS = {'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4',
           'five': '5', 'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10'}
ARTICLES = {'a', 'an', 'the'}
PERIOD_STRIP = re.compile(r'(?!<=\d)(\.)(?!\d)')
COMMA_STRIP = re.compile(r'(\d)(,)(\d)')
PUNCT = [';', r'/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@',
         '`', ',', '?', '!']


def normalize_answer(text: str) -> str:
    """The VQA evaluation's answer normalisation: punctuation, digits, articles, contractions."""
    text = text.replace('\n', ' ').replace('\t', ' ').strip()
    out = text
    for p in PUNCT:
        if (p + ' ' in text or ' ' + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, '')
        else:
            out = out.replace(p, ' ')
    out = PERIOD_STRIP.sub('', out)
    words = [NUMBERS.get(w, w) for w in out.lower().split()]
    return ' '.join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_accuracy(pred: str, answers: Sequence[str]) -> float:
    """min(#humans that gave the answer / 3, 1), averaged over the leave-one-out subsets
    (the official rule for 10 answers; with one answer it is exact match after normalising)."""
    pred = normalize_answer(pred)
    gts = [normalize_answer(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    accs = [min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3)
            for i in range(len(gts))]
    return sum(accs) / len(accs)


@METRICS.register_module()
class VQAMetric(TaskMetric):
    """VQA accuracy and exact match, overall and per ``question_type``.

    Also reports the majority-answer baseline: per question type, the accuracy of always
    giving that type's most common ground-truth answer in the evaluated set (an upper bound
    on any constant-answer baseline).
    """

    default_prefix = 'vqa'

    def __init__(self, tasks=('vqa',), **kwargs) -> None:
        super().__init__(tasks=tasks, **kwargs)

    def process_sample(self, sample: dict) -> dict:
        answers = sample['gt_answers']
        pred = sample['pred_text']
        return dict(pred=pred, answers=answers, type=sample.get('question_type', 'all'),
                    acc=vqa_accuracy(pred, answers),
                    exact=float(pred.strip().lower() == str(answers[0]).strip().lower()))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            print_log('VQAMetric: no samples of tasks %s were evaluated' % (self.tasks,),
                      logger='current', level=30)
            return {}
        by_type = defaultdict(list)
        for r in results:
            by_type[r['type']].append(r)
        metrics = dict(accuracy=_mean(r['acc'] for r in results),
                       exact_match=_mean(r['exact'] for r in results))
        baseline_hits = 0.0
        rows = [('question type', 'n', 'accuracy', 'majority baseline')]
        for qtype in sorted(by_type):
            rs = by_type[qtype]
            majority = Counter(normalize_answer(r['answers'][0]) for r in rs).most_common(1)[0][0]
            base = _mean(vqa_accuracy(majority, r['answers']) for r in rs)
            baseline_hits += base * len(rs)
            acc = _mean(r['acc'] for r in rs)
            metrics[f'{qtype}_accuracy'] = acc
            rows.append((qtype, str(len(rs)), f'{acc:.3f}', f'{base:.3f} ({majority!r})'))
        metrics['majority_baseline'] = baseline_hits / len(results)
        rows.append(('all', str(len(results)), f'{metrics["accuracy"]:.3f}',
                     f'{metrics["majority_baseline"]:.3f}'))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        table = '\n'.join(' | '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        print_log('\n' + table, logger='current')
        return metrics


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
