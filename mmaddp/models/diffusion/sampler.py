"""The iterative (MaskGIT / MAGE) sampler shared by ADDP and the token predictor.

Both generate by the same loop: start with every position masked; at each
step predict a distribution at every position, draw ids for the masked ones,
and keep masked the ``ceil(L * schedule((step + 1) / steps))`` least
confident draws (confidence ``log p + t * Gumbel``, ``t`` decaying to 0),
revealing the rest for good. Only the predictor differs: ADDP's encoder reads
pixels decoded from the current state, MAGE's predictor reads the ids. No
installed package exposes this loop for an arbitrary predictor, so it is
written here once.
"""
import math
from contextlib import contextmanager
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .mask_schedule import masked_fraction

Generators = Union[torch.Generator, Sequence[torch.Generator]]


@contextmanager
def eval_mode(*modules: nn.Module):
    """Run the block with ``modules`` in eval mode; each gets its own
    train / eval mode back afterwards, also when the block raises."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def make_generators(num_samples: int,
                    device,
                    seed: Optional[int] = None,
                    generator: Optional[Generators] = None,
                    seeds: Optional[Sequence[int]] = None) -> Generators:
    """One generator for the batch (``seed`` / ``generator``) or one per
    sample (``seeds`` or a list of generators), so that sample j drawn with
    its own generator does not depend on its batch mates."""
    if seeds is not None:
        if len(seeds) != num_samples:
            raise ValueError(f'got {len(seeds)} seeds / generators for {num_samples} samples')
        return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(torch.randint(2**31, (1, ))) if seed is None else seed)
    elif not isinstance(generator, torch.Generator) and len(generator) != num_samples:
        raise ValueError(f'got {len(generator)} seeds / generators for {num_samples} samples')
    return generator


def reveal_step(probs: torch.Tensor,
                ids: torch.Tensor,
                masked: torch.Tensor,
                step: int,
                steps: int,
                generator: Generators,
                schedule: str = 'cosine',
                temperature: float = 6.0,
                temperature_decay: bool = True,
                top_p: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One step of the sampler.

    Args:
        probs: B x L x C predicted distributions.
        ids: B x L current ids (ignored where ``masked``).
        masked: B x L bool, True where still masked.
        step, steps: this step (0-based) of ``steps``; the last reveals all.
        generator: see :func:`make_generators`.

    Returns:
        tuple: ids B x L (0 at still-masked positions) and the new mask B x L,
        a strict subset of ``masked`` with at least one position left before
        the last step.
    """
    batch, length = masked.shape
    sample_probs = probs if top_p is None else _top_p(probs, top_p)
    sampled = torch.where(masked, _multinomial(sample_probs, generator), ids)
    frac = (step + 1) / steps
    if step == steps - 1:
        keep = 0
    else:
        current = int(masked[0].sum())
        keep = math.ceil(length * masked_fraction(schedule, frac))
        keep = max(1, min(keep, current - 1))
    t = temperature * (1 - frac) if temperature_decay else temperature
    uniform = _uniform(batch, length, generator, probs.device)
    gumbel = -torch.log((-torch.log(uniform.clamp(1e-20, 1.0))).clamp_min(1e-20))
    confidence = torch.log(probs.gather(-1, sampled[..., None])[..., 0].clamp_min(1e-30))
    confidence = torch.where(masked, confidence + t * gumbel,
                             torch.full_like(confidence, float('inf')))
    new_masked = torch.zeros_like(masked)
    if keep > 0:
        new_masked.scatter_(1, confidence.topk(keep, dim=1, largest=False).indices, True)
    return torch.where(new_masked, torch.zeros_like(sampled), sampled), new_masked


def sample_ids(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               num_samples: int,
               length: int,
               steps: int,
               generator: Generators,
               device,
               on_step: Optional[Callable] = None,
               **step_kwargs):
    """Run the sampler with ``predict(ids, masked) -> probs B x L x C``.

    Args:
        predict: the model's step, ids B x L and mask B x L -> B x L x C.
        num_samples, length: B and L.
        steps (int): sampling steps (>= 1).
        generator: one ``torch.Generator`` or one per sample (see
            :func:`make_generators`, which makes them from seeds).
        device: where ids and masks live.
        on_step: ``on_step(ids, masked, probs)`` after every step (ADDP
            decodes its pixels there).
        **step_kwargs: ``schedule``, ``temperature``, ``temperature_decay``,
            ``top_p`` of :func:`reveal_step`.

    Returns:
        Tensor: the final ids B x L.
    """
    if not isinstance(generator, torch.Generator) and not (isinstance(
            generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator)):
        raise TypeError('sample_ids takes a torch.Generator or one per sample; make them from '
                        'seeds with make_generators')
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    masked_fraction(step_kwargs.get('schedule', 'cosine'), 0.0)  # validates the name
    ids = torch.zeros(num_samples, length, dtype=torch.long, device=device)
    masked = torch.ones(num_samples, length, dtype=torch.bool, device=device)
    for step in range(steps):
        probs = predict(ids, masked)
        ids, masked = reveal_step(probs, ids, masked, step, steps, generator, **step_kwargs)
        if on_step is not None:
            on_step(ids, masked, probs)
    return ids


def _multinomial(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One categorical draw per position of ``probs`` (B x L x C) -> B x L."""
    if isinstance(generator, torch.Generator):
        return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
    return torch.stack(
        [torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, generator)])


def _uniform(batch: int, length: int, generator: Generators, device) -> torch.Tensor:
    """U[0, 1) noise B x L from one generator or one per sample."""
    if isinstance(generator, torch.Generator):
        return torch.rand(batch, length, generator=generator, device=device)
    return torch.stack([torch.rand(length, generator=g, device=device) for g in generator])


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of codes whose probability reaches ``top_p``."""
    sorted_probs, order = probs.sort(-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return filtered / filtered.sum(-1, keepdim=True)
