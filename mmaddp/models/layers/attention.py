"""Which attention kernel to run: SDPA, or the explicit softmax(QK^T)V on CPU.

On CPU, ``F.scaled_dot_product_attention`` takes its flash kernel, whose
backward is slow for narrow heads and short sequences: in the demo's ADDP
step (heads 16 wide, 65 tokens, bf16 autocast, 1 thread) the step took 1.5 s
through SDPA and 0.9 s through timm's explicit path (the flash backward alone
was a third of the step); the demo token predictor's step (heads 32 wide)
0.9 s and 0.57 s. Heads of 64 channels or more (ViT-B, ViT-L) keep SDPA;
accelerators always do. The choice is made per call from the
tensor's device, so a model moved to a GPU uses SDPA there.
"""
from contextlib import contextmanager
from typing import Iterable, Optional

import torch
import torch.nn.functional as F

#: heads narrower than this use the explicit path on CPU
MIN_CPU_SDPA_HEAD_DIM = 64

_FORCE_EXPLICIT = False


@contextmanager
def explicit_attention():
    """Within the block every attention of mmaddp's models is the explicit
    softmax(QK^T)V, on any device and width (the benchmarks' stand-in for
    the release, which computes attention this way)."""
    global _FORCE_EXPLICIT
    before, _FORCE_EXPLICIT = _FORCE_EXPLICIT, True
    try:
        yield
    finally:
        _FORCE_EXPLICIT = before


def use_explicit_attention(device: torch.device, head_dim: int) -> bool:
    """Whether attention on ``device`` with heads ``head_dim`` wide is
    written out: on CPU below :data:`MIN_CPU_SDPA_HEAD_DIM`, or everywhere
    inside :func:`explicit_attention`."""
    return _FORCE_EXPLICIT or (device.type == 'cpu' and head_dim < MIN_CPU_SDPA_HEAD_DIM)


def attention(q: torch.Tensor,
              k: torch.Tensor,
              v: torch.Tensor,
              attn_mask: Optional[torch.Tensor] = None,
              dropout_p: float = 0.) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p)`` (B x
    heads x N x C/heads each), or the same computation written out where
    :func:`use_explicit_attention` says so."""
    if not use_explicit_attention(q.device, q.shape[-1]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    scores = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores + attn_mask
    weights = scores.softmax(-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


def select_attention_kernel(blocks: Iterable[torch.nn.Module], device: torch.device) -> None:
    """Set timm blocks' ``attn.fused_attn`` (SDPA) or their explicit path for
    ``device``, by :func:`use_explicit_attention`."""
    for blk in blocks:
        attn = getattr(blk, 'attn', None)
        if attn is not None and hasattr(attn, 'fused_attn'):
            attn.fused_attn = not use_explicit_attention(device, attn.head_dim)
