"""Tokenizer and token predictor under fp16 / bf16 autocast versus fp32:
agreement of code ids and of predicted probabilities, and time per batch.

    python benchmarks/autocast_check.py [--device cuda] [--out FILE]
"""
import argparse
import os.path as osp
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(HERE))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--out', default=osp.join(HERE, 'results', 'autocast.md'))
    args = parser.parse_args()
    import torch

    import mmaddp  # noqa: F401
    from mmaddp.models import TokenPredictor, VQTokenizer
    torch.manual_seed(0)
    dev = args.device
    tok = VQTokenizer(frozen=True).to(dev)
    pred = TokenPredictor('b', frozen=True).to(dev)
    images = torch.rand(args.batch, 3, 256, 256, device=dev)
    mask = torch.rand(args.batch, 256, device=dev) < 0.6

    def run(dtype):
        with torch.no_grad(), torch.autocast(
                dev, dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(2):  # warm-up, then timed
                if dev == 'cuda':
                    torch.cuda.synchronize()
                start = time.perf_counter()
                ids, vec = tok.encode(images)
                rec = tok.decode(vec)
                probs = pred.predict_probs(ids.flatten(1), mask)
                if dev == 'cuda':
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
        return ids, rec.float(), probs, elapsed

    ref_ids, ref_rec, ref_probs, ref_t = run(None)
    name = torch.cuda.get_device_name(0) if dev == 'cuda' else 'CPU'
    lines = [
        f'\n## {name}, torch {torch.__version__}, batch {args.batch} at 256 px\n',
        '| precision | ids equal to fp32 | max abs prob diff | max abs pixel diff | '
        'encode+decode+predict (s) |', '|---|---|---|---|---|',
        f'| fp32 | 100.0 % | 0 | 0 | {ref_t:.3f} |'
    ]
    for dtype in (torch.float16, torch.bfloat16):
        ids, rec, probs, t = run(dtype)
        lines.append(f'| {str(dtype).split(".")[-1]} autocast | '
                     f'{100 * (ids == ref_ids).float().mean():.1f} % | '
                     f'{(probs - ref_probs).abs().max():.2e} | {(rec - ref_rec).abs().max():.2e} | '
                     f'{t:.3f} |')
    text = '\n'.join(lines) + '\n'
    with open(args.out, 'a') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
