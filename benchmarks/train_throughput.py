"""Training throughput on text-only batches: VisionLLMv2 against LlavaForConditionalGeneration.

Both are the tiny configuration with identical weights and the same token batches; they are
timed alternately in one run. Prints one JSON line.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--batch-size 16]
"""
import argparse
import json
import time

import torch

from llava_reference import build_pair
from vlm2.datasets import load_json_records
from vlm2.structures import VLMDataSample


def text_batches(ann_file: str, batch_size: int, steps: int):
    records = load_json_records(ann_file)
    for s in range(steps):
        samples = []
        for r in records[s * batch_size:(s + 1) * batch_size]:
            sample = VLMDataSample()
            sample.conversation = [dict(t, value=t['value'].replace('<image>\n', ''))
                                   for t in r['conversations']]
            sample.task = 'chat'
            samples.append(sample)
        yield samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default='data/shapes_world/annotations/llava_train.json')
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ours, llava = build_pair()
    ours.train(), llava.train()
    opt_ours = torch.optim.AdamW(ours.parameters(), 1e-4)
    opt_llava = torch.optim.AdamW(llava.parameters(), 1e-4)
    times = {'vlm2': 0.0, 'llava': 0.0}
    tokens = samples = 0
    max_diff = 0.0
    for step, batch in enumerate(text_batches(args.data, args.batch_size,
                                              args.warmup + args.steps)):
        data = ours.data_preprocessor(dict(inputs=[None] * len(batch), data_samples=batch), True)
        enc = ours.encoder.batch([s.conversation for s in batch], [0] * len(batch), False,
                                 ['bench'] * len(batch))
        t0 = time.perf_counter()
        loss_ours = ours(**data, mode='loss')['loss_lm']
        loss_ours.backward()
        opt_ours.step(), opt_ours.zero_grad()
        t1 = time.perf_counter()
        loss_llava = llava(input_ids=enc['input_ids'], attention_mask=enc['attention_mask'],
                           labels=enc['labels']).loss
        loss_llava.backward()
        opt_llava.step(), opt_llava.zero_grad()
        t2 = time.perf_counter()
        if step == 0:
            max_diff = abs(float(loss_ours.detach()) - float(loss_llava.detach()))
        if step >= args.warmup:
            times['vlm2'] += t1 - t0
            times['llava'] += t2 - t1
            tokens += int(enc['attention_mask'].sum())
            samples += len(batch)
    result = dict(benchmark='train_throughput', batch_size=args.batch_size, steps=args.steps,
                  threads=torch.get_num_threads(),
                  vlm2_samples_per_s=samples / times['vlm2'],
                  llava_samples_per_s=samples / times['llava'],
                  vlm2_tokens_per_s=tokens / times['vlm2'],
                  llava_tokens_per_s=tokens / times['llava'],
                  ratio=times['llava'] / times['vlm2'],
                  first_step_loss_abs_diff=max_diff)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
