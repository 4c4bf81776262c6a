"""Greedy chat generation, batch 8, 64 new tokens: VisionLLMv2 against
LlavaForConditionalGeneration.generate, identical weights, timed alternately.

Both generate exactly ``--new-tokens`` tokens (EOS is masked), so the token counts are equal;
with identical weights the two must also produce the same text. Prints one JSON line.

    .venv/bin/python benchmarks/generate_latency.py [--rounds 5]
"""
import argparse
import json
import os.path as osp
import time

import torch
from mmengine.dataset import pseudo_collate

from llava_reference import build_pair
from vlm2.apis import build_inference_pipeline
from vlm2.datasets import load_json_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/shapes_world')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--new-tokens', type=int, default=64)
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args()
    ours, llava = build_pair()
    records = load_json_records(osp.join(args.data_root, 'annotations', 'llava_val.json'))
    pipeline = build_inference_pipeline(ours.cfg)
    items = [pipeline(dict(img_path=osp.join(args.data_root, 'images', r['image']),
                           sample_id=r['id'], task='chat', conversation=r['conversations'][:1]))
             for r in records[:args.batch_size]]
    data = ours.data_preprocessor(pseudo_collate(items), False)
    samples = data['data_samples']
    enc = ours.encoder.batch([s.conversation for s in samples],
                             ours._num_image_tokens(data['inputs']['num_tiles']), True,
                             ['bench'] * len(samples))
    eos = ours.tokenizer.eos_token_id
    ours.test_cfg['max_new_tokens'] = args.new_tokens

    def no_eos(tokens, logits):
        logits[:, eos] = float('-inf')
        return logits

    times = {'vlm2': 0.0, 'llava': 0.0}
    same = True
    with torch.no_grad():
        for r in range(args.rounds + 1):
            t0 = time.perf_counter()
            out = ours.predict(data['inputs'], samples, logits_processor=no_eos)
            t1 = time.perf_counter()
            ids = llava.generate(input_ids=enc['input_ids'], attention_mask=enc['attention_mask'],
                                 pixel_values=data['inputs']['pixel_values'], do_sample=False,
                                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 pad_token_id=ours.encoder.pad_id, eos_token_id=eos)
            t2 = time.perf_counter()
            if r == 0:  # warm-up round; also the equality check
                texts = [ours._decode(row) for row in ids[:, enc['input_ids'].shape[1]:].tolist()]
                same = texts == [s.pred_text for s in out]
                continue
            times['vlm2'] += t1 - t0
            times['llava'] += t2 - t1
    tokens = args.rounds * args.batch_size * args.new_tokens
    print(json.dumps(dict(benchmark='generate_latency', batch_size=args.batch_size,
                          new_tokens=args.new_tokens, rounds=args.rounds,
                          threads=torch.get_num_threads(),
                          vlm2_tokens_per_s=tokens / times['vlm2'],
                          llava_tokens_per_s=tokens / times['llava'],
                          ratio=times['llava'] / times['vlm2'], same_text=same)))


if __name__ == '__main__':
    main()
