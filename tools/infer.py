"""Reply to prompts about images; where a decoder fired, write its results and a picture."""
import argparse
import json
import os
import os.path as osp

import mmcv

from vlm2.apis import draw_prediction, inference, init_model
from vlm2.utils import allow_project_imports


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='vlm2 inference')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--img', nargs='+', required=True,
                        help='image path(s); one per prompt, or one for all prompts; "none" '
                             'for a text-only prompt (e.g. text-to-image)')
    parser.add_argument('--prompt', nargs='+', required=True, help='prompt(s)')
    parser.add_argument('--out-dir', default='outputs/infer')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--device', default='cpu')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    allow_project_imports()
    images = args.img * len(args.prompt) if len(args.img) == 1 else args.img
    images = [None if img.lower() == 'none' else img for img in images]
    model = init_model(args.config, args.checkpoint, args.device)
    results = inference(model, images, args.prompt, args.batch_size)
    os.makedirs(args.out_dir, exist_ok=True)
    for i, (img, prompt, sample) in enumerate(zip(images, args.prompt, results)):
        print(f'[{i}] {img} | {prompt}\n    -> {sample.pred_text}')
        decoded = {name: dec.format_results(sample)
                   for name, dec in model.super_link.decoders.items()}
        decoded = {k: v for k, v in decoded.items() if v}
        if decoded:
            with open(osp.join(args.out_dir, f'{i}.json'), 'w') as f:
                json.dump(dict(image=img, prompt=prompt, reply=sample.pred_text, **decoded), f,
                          indent=1)
        picture = draw_prediction(
            model, None if img is None else mmcv.imread(img, channel_order='rgb'), sample)
        mmcv.imwrite(mmcv.rgb2bgr(picture), osp.join(args.out_dir, f'{i}.png'))
        print(f'    wrote {args.out_dir}/{i}.png' + (f' and {i}.json' if decoded else ''))

if __name__ == '__main__':
    main()
