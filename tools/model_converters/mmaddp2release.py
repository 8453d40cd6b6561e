"""Convert an mmaddp checkpoint back to the layout of the ADDP / MAGE release.

    # ADDP with its frozen parts as the release stores them (vqgan.*, token_predictor.*)
    python tools/model_converters/mmaddp2release.py work_dirs/addp/iter_1000.pth \
        addp-vit-nano-4.pth --tokenizer tokenizer.pth --token-predictor token_predictor.pth
    # a token predictor (-> MAGE's layout), a tokenizer (-> VQGAN's), a classifier
    python tools/model_converters/mmaddp2release.py token_predictor.pth mage-vit-nano.pth

What SRC holds is recognised from its keys (ADDP runner checkpoint, token
predictor, tokenizer, or an ImageClassifier with an ADDPViT backbone). The
output has the release's container key (``model``; ``state_dict`` for the
tokenizer) and names; it is never written over an existing file without
``--overwrite``, and is written atomically.
"""
import argparse
import io
import os.path as osp

import torch

from mmaddp.checkpoint import read_state_dict
from mmaddp.checkpoint.convert import mmaddp_part, mmaddp_to_release
from mmaddp.engine.hooks.atomic_checkpoint_hook import write_atomically
from mmaddp.utils import exit_on_bad_input


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='mmaddp checkpoint -> released layout')
    parser.add_argument('src', help='an mmaddp checkpoint')
    parser.add_argument('dst', help='the file to write, in the release layout')
    parser.add_argument('--tokenizer', help='a tokenizer checkpoint to store as the vqgan.* copy')
    parser.add_argument(
        '--token-predictor', help='a token predictor checkpoint to store as token_predictor.*')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.exists(args.dst) and not args.overwrite:
        raise FileExistsError(f'{args.dst} exists; pass --overwrite to replace it')
    state = read_state_dict(args.src)
    part = mmaddp_part(state, f'Checkpoint {args.src}')
    tokenizer = read_state_dict(args.tokenizer, 'tokenizer') if args.tokenizer else None
    predictor = (
        read_state_dict(args.token_predictor, 'token_predictor') if args.token_predictor else None)
    content = mmaddp_to_release(part, state, tokenizer, predictor)
    buffer = io.BytesIO()
    torch.save(content, buffer)
    write_atomically(args.dst, buffer.getvalue())
    (tensors, ) = content.values()
    print(f'{part}: {len(tensors)} tensors in the release layout -> {args.dst}')
    return args.dst


if __name__ == '__main__':
    exit_on_bad_input(main)
