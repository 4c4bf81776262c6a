"""Generate the ShapesWorld data set.

Example:
    python tools/data/make_shapes_world.py --out data/shapes_world --seed 0
"""
import argparse

from vlm2.datasets.shapes_world import generate_shapes_world
from vlm2.datasets.shapes_world.vocab import MAX_SHAPES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/shapes_world', help='output folder')
    parser.add_argument('--seed', type=int, default=0, help='random seed (>= 0)')
    parser.add_argument('--num-train', type=int, default=2000, help='training images')
    parser.add_argument('--num-val', type=int, default=200, help='validation images')
    parser.add_argument('--image-size', type=int, default=128, help='image side in px')
    parser.add_argument('--max-shapes', type=int, default=MAX_SHAPES,
                        help='most shapes per image (1 for the generation benchmark)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    generate_shapes_world(args.out, seed=args.seed, num_train=args.num_train,
                          num_val=args.num_val, image_size=args.image_size,
                          max_shapes=args.max_shapes)


if __name__ == '__main__':
    main()
