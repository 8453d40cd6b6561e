"""Training the tiny tokenizer and token predictor from scratch on the
bundled corpus with tools/train.py, evaluated with tools/test.py."""
import ast

import pytest
import torch

from conftest import PREDICTOR_CFG, TOKENIZER_CFG, run


def evaluate(tmp_path, config, checkpoint, data_root, extra=()):
    """tools/test.py on a checkpoint; returns the printed metrics."""
    proc = run([
        'tools/test.py', config,
        str(checkpoint), '--work-dir',
        str(tmp_path), '--cfg-options', f'test_dataloader.dataset.data_root={data_root}', *extra
    ])
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_tokenizer_learns(tmp_path, trained_tokenizer):
    ckpt, data_root = trained_tokenizer
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmaddp.registry import MODELS
    cfg = Config.fromfile(TOKENIZER_CFG)
    init_default_scope(cfg.default_scope)  # other tests may have switched it
    torch.manual_seed(0)
    untrained = MODELS.build(cfg.model)
    untrained_path = tmp_path / 'untrained.pth'
    torch.save({'state_dict': untrained.state_dict()}, untrained_path)

    before = evaluate(tmp_path / 'a', TOKENIZER_CFG, untrained_path, data_root)
    after = evaluate(tmp_path / 'b', TOKENIZER_CFG, ckpt, data_root)
    print(f'tokenizer PSNR {before["tokenizer/psnr"]:.2f} -> {after["tokenizer/psnr"]:.2f} dB, '
          f'code usage {after["tokenizer/code_usage"]:.2f}, '
          f'perplexity {after["tokenizer/perplexity"]:.1f}')
    assert after['tokenizer/psnr'] > before['tokenizer/psnr'] + 5.0
    assert after['tokenizer/code_usage'] > 0.5  # most of the 128 codes in use
    assert after['tokenizer/perplexity'] > 32


def test_token_predictor_learns(tmp_path, trained_tokenizer, trained_predictor):
    tokenizer_ckpt, data_root = trained_tokenizer
    metrics = evaluate(tmp_path, PREDICTOR_CFG, trained_predictor, data_root,
                       [f'model.tokenizer.checkpoint={tokenizer_ckpt}'])
    print(metrics)
    assert metrics['token_predictor/accuracy'] > metrics['token_predictor/majority_baseline']
    # a trained predictor knows more about a masked id than how often codes occur
    assert 0.0 < metrics['token_predictor/information'] < metrics['token_predictor/marginal_nll']


def _metric(samples):
    from mmaddp.evaluation import MaskedTokenAccuracy
    metric = MaskedTokenAccuracy()
    metric.process(None, samples)
    return metric.compute_metrics(metric.results)


def test_information_of_perfect_and_frequency_only_predictors():
    """Against numbers worked out by hand with ``math``: a predictor sure of
    every true id knows the whole entropy of the code histogram; one that
    gives each code its frequency in the set knows nothing beyond it."""
    import math
    from collections import Counter
    targets = [torch.tensor([3, 3, 5, 7]), torch.tensor([3, 5, 9, 9, 9, 1])]
    ids = [int(i) for t in targets for i in t]
    freq = {k: v / len(ids) for k, v in Counter(ids).items()}
    entropy = -sum(p * math.log(p) for p in freq.values())
    perfect = _metric([dict(pred=t, target=t, nll=torch.zeros(len(t))) for t in targets])
    assert perfect['accuracy'] == 100.0
    # ids 3 and 9 occur three times each
    assert perfect['majority_baseline'] == pytest.approx(100.0 * 3 / 10)
    assert perfect['marginal_nll'] == pytest.approx(entropy)
    assert perfect['information'] == pytest.approx(entropy)
    frequency_only = _metric([
        dict(
            pred=torch.full_like(t, 9),
            target=t,
            nll=torch.tensor([-math.log(freq[int(i)]) for i in t], dtype=torch.float64))
        for t in targets
    ])
    assert frequency_only['accuracy'] == pytest.approx(100.0 * 3 / 10)
    assert frequency_only['information'] == pytest.approx(0.0, abs=1e-9)
    # samples without nll (an older predict): accuracy only, no made-up numbers
    assert set(_metric([dict(pred=t, target=t)
                        for t in targets])) == {'accuracy', 'majority_baseline'}
