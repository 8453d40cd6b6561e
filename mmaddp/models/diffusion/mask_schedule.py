"""Mask ratios: MAGE's truncated normal and ADDP's discrete schedule.

Neither exists in mmpretrain (its MAE/BEiT maskers use fixed ratios), so
both are written here; sampling uses ``torch.nn.init.trunc_normal_``.
"""
import math
from typing import Optional

import torch


def masked_fraction(schedule: str, s: float) -> float:
    """Fraction of positions still masked after progress ``s`` in [0, 1]:
    ``cos(pi/2 * s)`` (``'cosine'``, MaskGIT / MAGE / ADDP) or ``1 - s``
    (``'linear'``). The sampler's reveal schedule and the training grid of
    :class:`MaskRatioSchedule` both come from here."""
    if schedule == 'cosine':
        return math.cos(math.pi / 2 * s)
    if schedule == 'linear':
        return 1.0 - s
    raise ValueError(f"schedule must be 'cosine' or 'linear', got {schedule!r}")


class TruncatedNormalMaskRatio:
    """Per-image mask ratio ~ N(mean, std) truncated to [low, high]; the
    ``ceil(L * r)`` positions with the smallest uniform noise are masked.

    Args:
        mean, std, low, high: the truncated normal (MAGE: 0.55, 0.25, 0.5, 1.0).
    """

    def __init__(self, mean: float = 0.55, std: float = 0.25, low: float = 0.5, high: float = 1.0):
        if not low < high:
            raise ValueError(f'mask ratio range [{low}, {high}] is empty')
        self.mean, self.std, self.low, self.high = mean, std, low, high

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n ratios in [low, high] (float64, on the CPU)."""
        ratios = torch.empty(n, dtype=torch.float64)
        torch.nn.init.trunc_normal_(
            ratios, self.mean, self.std, self.low, self.high, generator=generator)
        return ratios

    def sample_mask(self,
                    batch: int,
                    length: int,
                    device=None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A bool mask B x L (True = masked) with ceil(L * r_b) masked per row."""
        ratios = self.sample(batch, generator)
        counts = torch.tensor([min(length, max(1, math.ceil(length * float(r)))) for r in ratios])
        noise = torch.rand(batch, length, generator=generator)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        return (ranks < counts[:, None]).to(device)


class MaskRatioSchedule:
    """ADDP's noise schedule: a discrete grid of mask ratios and nested masks.

    Grid: ``r_k = cos(pi/2 * k / num_grid)``, k = 0..num_grid, keeping
    ``low <= r < high``, ascending. Step t's grid point is drawn with weight
    proportional to the pdf of N(mean, std) (truncated to [low, high]: the
    truncation constant cancels); step t+1 uses the point ``min_offset`` ..
    ``max_offset`` places further (uniform), clipped to the last one. One
    uniform noise vector per image orders the positions; the first
    ``ceil(L * r)`` are masked, so ``mask_t`` is a subset of ``mask_next``.
    One pair of grid points is drawn per batch (equal counts in a batch).
    """

    def __init__(self,
                 num_grid: int = 100,
                 low: float = 0.5,
                 high: float = 1.0,
                 mean: float = 0.55,
                 std: float = 0.25,
                 min_offset: int = 1,
                 max_offset: int = 5):
        # masked_fraction('cosine', k / num_grid) for the whole grid at once
        k = torch.arange(num_grid + 1, dtype=torch.float64)
        grid = torch.cos(math.pi / 2 * k / num_grid)
        self.ratios = grid[(grid >= low) & (grid < high)].sort().values
        if len(self.ratios) == 0:
            raise ValueError(f'no grid ratio in [{low}, {high})')
        self.weights = torch.exp(-0.5 * ((self.ratios - mean) / std)**2)
        self.weights /= self.weights.sum()
        self.min_offset, self.max_offset = min_offset, max_offset

    def sample_steps(self, generator: Optional[torch.Generator] = None):
        """Grid indices (t, t+1) of one batch."""
        t = int(torch.multinomial(self.weights, 1, generator=generator))
        offset = int(
            torch.randint(self.min_offset, self.max_offset + 1, (1, ), generator=generator))
        return t, min(t + offset, len(self.ratios) - 1)

    @staticmethod
    def num_masked(ratio: float, length: int) -> int:
        return min(length, math.ceil(length * float(ratio)))

    def masks_for(self,
                  batch: int,
                  length: int,
                  t: int,
                  t_next: int,
                  device=None,
                  generator: Optional[torch.Generator] = None):
        """Nested bool masks B x L for the grid indices ``t`` <= ``t_next``."""
        noise = torch.rand(batch, length, generator=generator)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        mask_t = ranks < self.num_masked(self.ratios[t], length)
        mask_next = ranks < self.num_masked(self.ratios[t_next], length)
        return mask_t.to(device), mask_next.to(device)

    def sample_masks(self,
                     batch: int,
                     length: int,
                     device=None,
                     generator: Optional[torch.Generator] = None):
        """(mask_t, mask_next), each B x L bool, mask_t within mask_next."""
        t, t_next = self.sample_steps(generator)
        return self.masks_for(batch, length, t, t_next, device, generator)
