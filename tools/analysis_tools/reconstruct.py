"""Tokenizer reconstructions of a folder of images, same relative paths.

    python tools/analysis_tools/reconstruct.py TOKENIZER_CONFIG CKPT SRC_DIR OUT_DIR

Every PNG / JPEG under SRC_DIR is encoded to code ids and decoded back
(``VQTokenizer.encode`` then ``decode``) and written as PNG under OUT_DIR at
the same relative path, so a labelled folder (``val/CLASS/*.png``) stays a
labelled folder: a classifier can be tested on it and FID computed against
the originals (the tokenizer's ceiling for generation). Prints the mean PSNR.
"""
import argparse
import json
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import mmaddp  # noqa: E402,F401
from mmaddp.evaluation.generation_metrics import list_image_files
from mmaddp.registry import MODELS


def main():
    parser = argparse.ArgumentParser(description='VQ tokenizer reconstructions of a folder')
    parser.add_argument('config', help='a config whose model is a VQTokenizer')
    parser.add_argument('checkpoint')
    parser.add_argument('src', help='folder of images (searched recursively)')
    parser.add_argument('out', help='output folder (must not exist or be empty)')
    parser.add_argument('--batch-size', type=int, default=100)
    args = parser.parse_args()
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file not found: {args.checkpoint}')
    if osp.isdir(args.out) and os.listdir(args.out):
        parser.error(f'{args.out} is not empty')
    files = list_image_files(args.src)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if cfg.model.get('type') != 'VQTokenizer':
        raise ValueError(f'{args.config}: the model is {cfg.model.get("type")!r}, not a '
                         'VQTokenizer')
    tokenizer = MODELS.build(dict(cfg.model, checkpoint=args.checkpoint, frozen=True)).eval()
    psnr = []
    for start in range(0, len(files), args.batch_size):
        batch = files[start:start + args.batch_size]
        images = torch.from_numpy(
            np.stack([np.asarray(Image.open(f).convert('RGB'))
                      for f in batch])).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            ids, _ = tokenizer.encode(images)
            recon = tokenizer.decode_ids(ids).float().clamp(0, 1)
        mse = (recon - images).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        psnr += (10 * torch.log10(1 / mse)).tolist()
        pixels = recon.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for path, img in zip(batch, pixels):
            dst = osp.join(args.out, osp.splitext(osp.relpath(path, args.src))[0] + '.png')
            os.makedirs(osp.dirname(dst), exist_ok=True)
            Image.fromarray(img).save(dst)
    result = dict(images=len(files), psnr=float(np.mean(psnr)))
    print(json.dumps(result))


if __name__ == '__main__':
    main()
