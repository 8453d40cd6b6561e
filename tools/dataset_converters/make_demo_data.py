"""Build the bundled demo data (ImageNet, COCO and ADE20K layouts) from
scikit-learn's digit scans and sample photographs, in seconds.

    python tools/dataset_converters/make_demo_data.py --out data/demo [--seed 0]
"""
import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/

from demo.demo_data import build_demo_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='output folder')
    parser.add_argument('--seed', type=int, default=0, help='seed; same seed, same bytes')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')
    args = parser.parse_args()
    start = time.time()
    counts = build_demo_data(args.out, seed=args.seed, overwrite=args.overwrite)
    print(json.dumps(counts, indent=2, sort_keys=True))
    print(f'built {args.out} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
