"""Convert a file of the ADDP / MAGE release to mmaddp checkpoints.

    # ADDP: the model, and the frozen parts it carries as their own files
    python tools/model_converters/release2mmaddp.py addp-vit-base-16.pth \
        pretrain/addp-vit-base-p16_mmaddp.pth --frozen-parts-dir pretrain/
    # MAGE's token predictor, VQGAN's tokenizer, a released classifier
    python tools/model_converters/release2mmaddp.py mage-vitb-1600.pth pretrain/mage_mmaddp.pth
    python tools/model_converters/release2mmaddp.py vqgan_jax_strongaug.ckpt pretrain/vq_mmaddp.pth

The layout is recognised from the keys (see mmaddp/checkpoint/layouts.py).
DST gets the file's main part as an MMEngine checkpoint (``meta`` +
``state_dict``); ``--frozen-parts-dir`` writes the ``vqgan.*`` /
``token_predictor.*`` copies an ADDP or MAGE file holds as
``tokenizer.pth`` / ``token_predictor.pth`` there. Tensors no mmaddp part
reads are listed, not written. Existing files are never overwritten without
``--overwrite``; each file is written atomically.
"""
import argparse
import io
import os.path as osp

import torch

import mmaddp
from mmaddp.checkpoint import read_state_dict
from mmaddp.checkpoint.convert import release_to_mmaddp
from mmaddp.engine.hooks.atomic_checkpoint_hook import write_atomically
from mmaddp.utils import exit_on_bad_input


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='released ADDP / MAGE / VQGAN file -> mmaddp')
    parser.add_argument('src', help='the released file')
    parser.add_argument('dst', help='the mmaddp checkpoint to write (the main part)')
    parser.add_argument(
        '--frozen-parts-dir', help='also write the frozen-part copies the file holds here')
    parser.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    return parser.parse_args(argv)


def save_checkpoint(path: str, state: dict, meta: dict) -> None:
    """Write an MMEngine-style checkpoint ``{'meta', 'state_dict'}`` atomically."""
    buffer = io.BytesIO()
    torch.save(dict(meta=meta, state_dict=state), buffer)
    write_atomically(path, buffer.getvalue())


def main(argv=None):
    args = parse_args(argv)
    conversion = release_to_mmaddp(read_state_dict(args.src), f'Checkpoint {args.src}')
    outputs = {conversion.main: args.dst}
    copies = [p for p in conversion.parts if p != conversion.main]
    if args.frozen_parts_dir:
        outputs.update({p: osp.join(args.frozen_parts_dir, f'{p}.pth') for p in copies})
    for path in outputs.values():  # refuse before writing anything
        if osp.exists(path) and not args.overwrite:
            raise FileExistsError(f'{path} exists; pass --overwrite to replace it')
    meta = dict(
        converted_from=osp.abspath(args.src),
        release_layout=conversion.layout,
        mmaddp_version=mmaddp.__version__,
        dropped=conversion.dropped)
    for part, path in outputs.items():
        save_checkpoint(path, conversion.parts[part], dict(meta, part=part))
        print(f'{part}: {len(conversion.parts[part])} tensors -> {path}')
    left = [p for p in copies if p not in outputs]
    if left:
        print(f'not written (pass --frozen-parts-dir): the copies of {", ".join(left)}')
    if conversion.dropped:
        print(f'dropped {len(conversion.dropped)} tensors no mmaddp part reads: '
              f'{", ".join(conversion.dropped[:8])}{" ..." if len(conversion.dropped) > 8 else ""}')
    return outputs


if __name__ == '__main__':
    exit_on_bad_input(main)
