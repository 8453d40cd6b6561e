"""Mask ratios drawn from a truncated normal (MAGE's masking)."""
import math
from typing import Optional

import torch


class TruncatedNormalMaskRatio:
    """Per-image mask ratio ~ N(mean, std) truncated to [low, high]; the
    ``ceil(L * r)`` positions with the smallest uniform noise are masked.

    Args:
        mean, std, low, high: the truncated normal (MAGE: 0.55, 0.25, 0.5, 1.0).
    """

    def __init__(self, mean: float = 0.55, std: float = 0.25, low: float = 0.5,
                 high: float = 1.0):
        if not low < high:
            raise ValueError(f'mask ratio range [{low}, {high}] is empty')
        self.mean, self.std, self.low, self.high = mean, std, low, high

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n ratios in [low, high] (float64, on the CPU)."""
        ratios = torch.empty(n, dtype=torch.float64)
        torch.nn.init.trunc_normal_(ratios, self.mean, self.std, self.low, self.high,
                                    generator=generator)
        return ratios

    def sample_mask(self, batch: int, length: int, device=None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A bool mask B x L (True = masked) with ceil(L * r_b) masked per row."""
        ratios = self.sample(batch, generator)
        counts = torch.tensor([min(length, max(1, math.ceil(length * float(r)))) for r in ratios])
        noise = torch.rand(batch, length, generator=generator)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        return (ranks < counts[:, None]).to(device)
