"""Can the tiny LLM learn to find the asked words in its context, with no image at all?

ShapesWorld's existence questions ("Is there a green triangle?") with the image replaced by
its caption ("a small purple hexagon at the top, ... . Is there a green triangle in the
image?"): the answer needs only attention keyed by the question's words over the context.
Trains the LLM of a config (``model.llm``, built from scratch with the config's tokenizer, as
``VisionLLMv2`` builds it) on the yes/no answer of the training questions and prints the
held-out accuracy every ``--eval-every`` steps and the majority baseline. A diagnostic of why
the demo answers existence questions at chance, not a target.

    .venv/bin/python benchmarks/lookup_probe.py --steps 1500
    .venv/bin/python benchmarks/lookup_probe.py --steps 1500 --cfg-options \\
        model.llm.config.use_sliding_window=False \\
        "model.llm.config.layer_types=[full_attention,full_attention,full_attention,full_attention]"

Prints one JSON line per evaluation and a final summary line.
"""
import argparse
import json
import os.path as osp
import random
import time

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

from vlm2.datasets.chat_template import get_template
from vlm2.datasets.shapes_world.vocab import EXIST_TEMPLATES
from vlm2.models.hf_builders import build_hf_model
from vlm2.registry import TOKENIZERS

CONFIG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'visionllmv2',
                  'visionllmv2_tiny_shapes.py')
#: how ShapesWorld's existence questions start ('is there ', 'does the image contain ')
EXIST_PREFIXES = tuple(sorted({t.split('{')[0].lower() for t in EXIST_TEMPLATES}))


def existence_in_text(root: str, split: str) -> list[tuple[str, str]]:
    """(caption + question, answer) for every existence turn of ``llava_{split}.json``.

    Raises ``KeyError`` naming the file when an image has no caption.
    """
    ann = osp.join(root, 'annotations')
    captions = {}
    with open(osp.join(ann, f'captions_{split}.jsonl')) as f:
        for line in f:
            record = json.loads(line)
            captions[record['image']] = record['caption']
    items = []
    with open(osp.join(ann, f'llava_{split}.json')) as f:
        records = json.load(f)
    for record in records:
        turns = record['conversations']
        for q, a in zip(turns[::2], turns[1::2]):
            question = q['value'].replace('<image>', '').strip()
            if not question.lower().startswith(EXIST_PREFIXES):
                continue
            if record['image'] not in captions:
                raise KeyError(f'{osp.join(ann, f"captions_{split}.jsonl")}: no caption for '
                               f'{record["image"]} (asked in llava_{split}.json)')
            items.append((f'{captions[record["image"]]} . {question}', a['value']))
    return items


def encode(tokenizer, template: str,
           items: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Prompt ids (one round of the chat ``template``), and the answer's single token id."""
    instruction = get_template(template).instruction
    out = []
    for prompt, answer in items:
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        if len(answer_ids) != 1:
            raise ValueError(f'answer {answer!r} is not one token for this tokenizer')
        out.append((tokenizer(instruction.format(input=prompt)).input_ids, answer_ids[0]))
    return out


def collate(batch: list[tuple[list[int], int]], pad_id: int):
    """Left-padded ids and mask (the answer is predicted at the last position), answers."""
    length = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), length), pad_id)
    mask = torch.zeros(len(batch), length, dtype=torch.long)
    for k, (seq, _) in enumerate(batch):
        ids[k, length - len(seq):] = torch.tensor(seq)
        mask[k, length - len(seq):] = 1
    return ids, mask, torch.tensor([a for _, a in batch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--data-root', default='data/shapes_world')
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--eval-every', type=int, default=250)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope('vlm2')
    tokenizer = TOKENIZERS.build(cfg.model.tokenizer)
    llm_cfg = cfg.model.llm.to_dict()
    llm_cfg['config'] = dict(llm_cfg['config'], vocab_size=len(tokenizer))
    torch.manual_seed(args.seed)
    llm = build_hf_model('model.llm', **llm_cfg)
    train = encode(tokenizer, cfg.model.template, existence_in_text(args.data_root, 'train'))
    val = encode(tokenizer, cfg.model.template, existence_in_text(args.data_root, 'val'))
    answers = [a for _, a in val]
    majority = max(answers.count(a) for a in set(answers)) / len(answers)
    # the demo's optimiser, without its schedule: the question is whether it learns at all
    opt = torch.optim.AdamW(llm.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
    rng, start, curve = random.Random(args.seed), time.time(), []
    for step in range(1, args.steps + 1):
        ids, mask, target = collate(rng.sample(train, args.batch_size), tokenizer.pad_token_id)
        loss = F.cross_entropy(llm(input_ids=ids, attention_mask=mask).logits[:, -1].float(),
                               target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            llm.eval()
            hits = []
            with torch.no_grad():
                for k in range(0, len(val), 64):
                    ids, mask, target = collate(val[k:k + 64], tokenizer.pad_token_id)
                    pred = llm(input_ids=ids, attention_mask=mask).logits[:, -1].argmax(-1)
                    hits += (pred == target).tolist()
            llm.train()
            curve.append(dict(step=step, train_loss=round(loss.item(), 4),
                              val_accuracy=round(sum(hits) / len(hits), 4),
                              seconds=round(time.time() - start)))
            print(json.dumps(curve[-1]), flush=True)
    print(json.dumps(dict(train_questions=len(train), val_questions=len(val),
                          majority_baseline=round(majority, 4),
                          final_val_accuracy=curve[-1]['val_accuracy'],
                          best_val_accuracy=max(c['val_accuracy'] for c in curve),
                          layer_types=llm_cfg['config'].get('layer_types'))))


if __name__ == '__main__':
    main()
