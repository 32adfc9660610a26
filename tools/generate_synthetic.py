#!/usr/bin/env python
"""Generate the synthetic world in the Virtual KITTI 2 layout.

    python tools/generate_synthetic.py --out datasets/synthetic --sequences 5 --frames 20 \
        --width 512 --height 160 --seed 0

The same arguments give the same bytes. See motion_rcnn_d2/data/synthetic/writer.py for the
files written.
"""
import argparse
import sys
import time

import motion_rcnn_d2  # noqa: F401  (installs the compatibility layer)
from motion_rcnn_d2.data.synthetic import generate_world


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output root (SceneNN/<variant> inside)")
    parser.add_argument("--sequences", type=int, default=5, help="number of sequences")
    parser.add_argument("--frames", type=int, default=20, help="frames per sequence (>= 2)")
    parser.add_argument("--width", type=int, default=512, help="image width in pixels")
    parser.add_argument("--height", type=int, default=160, help="image height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--variant", default="clone", help="variant folder name")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        roots = generate_world(args.out, sequences=args.sequences, frames=args.frames,
                               width=args.width, height=args.height, seed=args.seed,
                               variant=args.variant, progress=not args.no_progress)
    except ValueError as error:  # argument errors name the argument and the fix
        sys.exit(f"generate_synthetic.py: {error}")
    seconds = time.perf_counter() - start
    pairs = args.sequences * (args.frames - 1)
    print(f"Wrote {len(roots)} sequence(s) under {args.out} ({pairs} frame pairs, "
          f"{args.width}x{args.height}) in {seconds:.1f} s ({pairs / seconds:.1f} pairs/s).")


if __name__ == "__main__":
    main()
