"""Training the tiny tokenizer and token predictor from scratch on the
bundled corpus with tools/train.py, evaluated with tools/test.py."""
import ast
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOKENIZER_CFG = osp.join(ROOT, 'configs', 'vq_tokenizer', 'vq-tokenizer-tiny_1xb64-1200i_demo.py')
PREDICTOR_CFG = osp.join(ROOT, 'configs', 'token_predictor',
                         'token-predictor-tiny_1xb64-1200i_demo.py')
ITERS = 150


def run(args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def short_run_options(data_root, max_iters=ITERS):
    return [f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}',
            f'test_dataloader.dataset.data_root={data_root}',
            'train_dataloader.batch_size=32', f'train_cfg.max_iters={max_iters}',
            f'train_cfg.val_interval={max_iters}', f'default_hooks.checkpoint.interval={max_iters}',
            f'param_scheduler.1.end={max_iters}']


def test_metrics(tmp_path, config, checkpoint, data_root, extra=()):
    proc = run(['tools/test.py', config, str(checkpoint), '--work-dir', str(tmp_path), '--cfg-options',
                f'test_dataloader.dataset.data_root={data_root}', *extra])
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


test_metrics.__test__ = False  # a helper, not a test


@pytest.fixture(scope='module')
def trained_tokenizer(tmp_path_factory, demo_root):
    work = tmp_path_factory.mktemp('tokenizer')
    data_root = osp.join(demo_root, 'pretrain')
    run(['tools/train.py', TOKENIZER_CFG, '--work-dir', str(work), '--cfg-options',
         *short_run_options(data_root)])
    return work / f'iter_{ITERS}.pth', data_root


def test_tokenizer_learns(tmp_path, trained_tokenizer):
    ckpt, data_root = trained_tokenizer
    from mmengine.config import Config
    from mmaddp.registry import MODELS
    cfg = Config.fromfile(TOKENIZER_CFG)
    torch.manual_seed(0)
    untrained = MODELS.build(cfg.model)
    untrained_path = tmp_path / 'untrained.pth'
    torch.save({'state_dict': untrained.state_dict()}, untrained_path)

    before = test_metrics(tmp_path / 'a', TOKENIZER_CFG, untrained_path, data_root)
    after = test_metrics(tmp_path / 'b', TOKENIZER_CFG, ckpt, data_root)
    print(f'tokenizer PSNR {before["tokenizer/psnr"]:.2f} -> {after["tokenizer/psnr"]:.2f} dB, '
          f'code usage {after["tokenizer/code_usage"]:.2f}, '
          f'perplexity {after["tokenizer/perplexity"]:.1f}')
    assert after['tokenizer/psnr'] > before['tokenizer/psnr'] + 5.0
    assert after['tokenizer/code_usage'] > 0.5  # most of the 128 codes in use
    assert after['tokenizer/perplexity'] > 32


def test_token_predictor_learns(tmp_path, trained_tokenizer):
    tokenizer_ckpt, data_root = trained_tokenizer
    opts = short_run_options(data_root) + [f'model.tokenizer.checkpoint={tokenizer_ckpt}']
    run(['tools/train.py', PREDICTOR_CFG, '--work-dir', str(tmp_path), '--cfg-options', *opts])
    metrics = test_metrics(tmp_path / 'eval', PREDICTOR_CFG, tmp_path / f'iter_{ITERS}.pth',
                           data_root, [f'model.tokenizer.checkpoint={tokenizer_ckpt}'])
    print(metrics)
    assert metrics['token_predictor/accuracy'] > metrics['token_predictor/majority_baseline']
