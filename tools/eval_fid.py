"""FID and Inception Score of a folder of samples against a folder of reference images.

    # the paper's protocol: 50k samples against the 50k ImageNet val images at
    # 256 px (tools/dataset_converters/prepare_fid_reference.py), torch-fidelity's
    # Inception from a local weights file (never downloaded)
    python tools/eval_fid.py samples/ data/imagenet/val_fid_256 \
        --weights pretrain/weights-inception-2015-12-05-6726825d.pth
    # an mmpretrain classifier as feature net (e.g. the tiny demo classifier)
    python tools/eval_fid.py samples/ data/demo/imagenet/val \
        --feature-config CLS_CONFIG --feature-checkpoint CLS_CKPT

Both feature nets go through ``torch_fidelity.calculate_metrics`` (the
classifier as its registered ``mmaddp-classifier`` feature extractor, which
also gives the share of samples with top class probability >= 0.9).
Both folders are searched recursively for PNG / JPEG files; the samples'
``grid.png`` (tools/generate.py) is left out. torch-fidelity shows its
progress over the images on stderr (``--quiet``: none). Prints the metrics
and writes them as JSON (default: SAMPLES_DIR/fid_metrics.json).
"""
import argparse
import json
import os.path as osp

import mmaddp  # noqa: F401
from mmaddp.evaluation.generation_metrics import (DEFAULT_INCEPTION_WEIGHTS, ClassifierFeatureNet,
                                                  InceptionFeatureNet, list_image_files)
from mmaddp.utils import exit_on_bad_input


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='FID / IS of generated images')
    parser.add_argument('samples_dir', help='folder of generated images')
    parser.add_argument('ref_dir', help='folder of reference images')
    parser.add_argument(
        '--feature-net',
        choices=['inception', 'classifier'],
        default=None,
        help='default: classifier when --feature-config is given, else inception')
    parser.add_argument(
        '--weights',
        default=DEFAULT_INCEPTION_WEIGHTS,
        help='inception-v3-compat weights file of torch-fidelity (never downloaded; '
        f'default: {DEFAULT_INCEPTION_WEIGHTS})')
    parser.add_argument('--feature-config', help='mmpretrain classifier config')
    parser.add_argument('--feature-checkpoint', help='its checkpoint')
    parser.add_argument(
        '--input-size', type=int, default=None, help='classifier: resize images to this size first')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--splits', type=int, default=10, help='Inception Score splits')
    parser.add_argument(
        '--exclude', nargs='*', default=['grid.png'], help='file names in SAMPLES_DIR to leave out')
    parser.add_argument('--out', help='JSON file (default: SAMPLES_DIR/fid_metrics.json)')
    parser.add_argument(
        '--quiet', action='store_true', help="no torch-fidelity messages or progress bar")
    args = parser.parse_args(argv)
    if args.feature_net is None:
        args.feature_net = 'classifier' if args.feature_config else 'inception'
    if args.feature_net == 'classifier':
        if not args.feature_config:
            parser.error('--feature-net classifier needs --feature-config (and usually '
                         '--feature-checkpoint)')
    elif args.feature_config or args.feature_checkpoint or args.input_size:
        parser.error('--feature-config / --feature-checkpoint / --input-size belong to '
                     '--feature-net classifier')
    return args


def main(argv=None):
    args = parse_args(argv)
    num_samples = len(list_image_files(args.samples_dir, args.exclude))  # clear errors first
    num_ref = len(list_image_files(args.ref_dir))
    if args.feature_net == 'inception':
        net = InceptionFeatureNet(
            args.weights,
            batch_size=args.batch_size,
            isc_splits=args.splits,
            exclude=args.exclude,
            verbose=not args.quiet)
        source = dict(network='inception-v3-compat', weights=args.weights)
    else:
        net = ClassifierFeatureNet(
            args.feature_config,
            args.feature_checkpoint,
            input_size=args.input_size,
            batch_size=args.batch_size,
            is_splits=args.splits,
            exclude=args.exclude,
            verbose=not args.quiet)
        source = dict(
            network='classifier', config=args.feature_config, checkpoint=args.feature_checkpoint)
    metrics = net.compute_metrics(args.samples_dir, args.ref_dir)
    record = dict(
        metrics,
        num_samples=num_samples,
        num_reference=num_ref,
        samples_dir=args.samples_dir,
        ref_dir=args.ref_dir,
        **source)
    out = args.out or osp.join(args.samples_dir, 'fid_metrics.json')
    with open(out, 'w') as f:
        json.dump(record, f, indent=2)
    confident = (f"  p>=0.9 {metrics['confident_share']:.1f} %"
                 if 'confident_share' in metrics else '')
    print(f"FID {metrics['fid']:.4f}  IS {metrics['is_mean']:.4f} +- {metrics['is_std']:.4f}"
          f'{confident} ({num_samples} samples vs {num_ref} reference images) -> {out}')
    return record


if __name__ == '__main__':
    exit_on_bad_input(main)
