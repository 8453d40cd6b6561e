"""Metrics of the tokenizer and the token predictor (nothing in mmpretrain
measures codebook usage or masked-token accuracy)."""
from typing import List, Sequence

import torch
from mmengine.evaluator import BaseMetric

from mmaddp.registry import METRICS


@METRICS.register_module()
class ReconstructionMetric(BaseMetric):
    """Tokenizer quality: mean reconstruction PSNR (dB) and codebook usage.

    Reports ``psnr``, ``perplexity`` (exp of the entropy of the code
    histogram; equals the number of codes when all are used equally) and
    ``code_usage`` (share of codes used at least once).

    Args:
        num_codes (int): codebook size.
    """
    default_prefix = 'tokenizer'

    def __init__(self, num_codes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_codes = num_codes

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            self.results.append(
                dict(
                    psnr=sample['psnr'],
                    hist=torch.bincount(sample['ids'].flatten(), minlength=self.num_codes)))

    def compute_metrics(self, results: List[dict]) -> dict:
        hist = torch.stack([r['hist'] for r in results]).sum(0).double()
        p = hist / hist.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        return dict(
            psnr=sum(r['psnr'] for r in results) / len(results),
            perplexity=float(entropy.exp()),
            code_usage=float((hist > 0).double().mean()))


@METRICS.register_module()
class MaskedTokenAccuracy(BaseMetric):
    """Token predictor quality on masked positions.

    Reports ``accuracy`` (%, argmax prediction equals the true id) and, as
    the baseline it must beat, ``majority_baseline`` (%, the share of masked
    positions holding the most common code of the evaluated set).

    When the samples carry ``nll`` (per masked position, the negative log
    probability of the true id, nats), it also reports how much the
    predictor knows, which is what ADDP's targets q_t can teach the encoder:
    ``nll`` (mean), ``marginal_nll`` (the same for a predictor that only
    knows how often each code occurs in the evaluated set: the entropy of
    that histogram) and ``information`` = ``marginal_nll`` - ``nll`` (nats
    per masked token beyond code frequencies; 0 for a predictor that has
    learnt only the frequencies, ``marginal_nll`` for a perfect one).
    """
    default_prefix = 'token_predictor'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            result = dict(
                correct=int((sample['pred'] == sample['target']).sum()), target=sample['target'])
            if 'nll' in sample:
                result['nll'] = float(sample['nll'].double().sum())
            self.results.append(result)

    def compute_metrics(self, results: List[dict]) -> dict:
        targets = torch.cat([r['target'] for r in results])
        total = max(len(targets), 1)
        hist = torch.bincount(targets) if len(targets) else torch.zeros(1, dtype=torch.long)
        metrics = dict(
            accuracy=100.0 * sum(r['correct'] for r in results) / total,
            majority_baseline=100.0 * int(hist.max()) / total)
        if all('nll' in r for r in results):
            p = hist[hist > 0].double() / total
            marginal = float(-(p * p.log()).sum())
            nll = sum(r['nll'] for r in results) / total
            metrics.update(nll=nll, marginal_nll=marginal, information=marginal - nll)
        return metrics
