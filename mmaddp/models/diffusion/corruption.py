"""ADDP's forward (noise) process: clean images -> partly unreliable pixels.

Steps 1-4 of the spec, run by the frozen parts without gradient: encode the
image to ids z0, let the token predictor guess the ids hidden by the next
step's mask and the current one, and decode a mixture in which positions of
``mask_t`` are the *expected* code vector of that guess (soft vectors) and
the others the image's own code vectors. The same mixture decodes the
sampler's states (:func:`mix_code_vectors`).
"""
from typing import Tuple

import torch


def mix_code_vectors(tokenizer, vectors: torch.Tensor, masked: torch.Tensor,
                     probs: torch.Tensor) -> torch.Tensor:
    """Replace the code vectors of masked positions by soft vectors.

    Args:
        tokenizer: a ``VQTokenizer`` (``soft_embed``).
        vectors: B x C x h x w code vectors of the known ids.
        masked: B x L bool (L = h * w), True where unreliable.
        probs: B x L x K predicted probabilities over the K codes.

    Returns:
        Tensor: B x C x h x w, ``vectors`` where not masked, else
        ``probs @ codebook``.
    """
    b, _, h, w = vectors.shape
    soft = tokenizer.soft_embed(probs.view(b, h, w, -1))
    return torch.where(masked.view(b, 1, h, w), soft.to(vectors.dtype), vectors)


@torch.no_grad()
def corrupt(tokenizer, token_predictor, images: torch.Tensor, mask_t: torch.Tensor,
            mask_next: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One draw of ADDP's forward process.

    Args:
        tokenizer: the frozen ``VQTokenizer``.
        token_predictor: the frozen ``TokenPredictor``.
        images: B x 3 x H x W in [0, 1].
        mask_t, mask_next: B x L bool, ``mask_t`` within ``mask_next``.

    Returns:
        tuple: ids z0 (B x L), pixels x_t (B x 3 x H x W in [0, 1]) and the
        target probabilities q_t (B x L x codes) of the ids ``mask_t`` hides.
    """
    ids, e0 = tokenizer.encode(images)
    b = ids.shape[0]
    ids = ids.flatten(1)
    # both token-predictor passes share one batched forward
    probs = token_predictor.predict_probs(torch.cat([ids, ids]), torch.cat([mask_next, mask_t]))
    p_next, q_t = probs.split(b)
    x_t = tokenizer.decode(mix_code_vectors(tokenizer, e0, mask_t, p_next)).clamp(0, 1)
    return ids, x_t, q_t


@torch.no_grad()
def fully_masked_pixels(tokenizer, token_predictor, length: int, device) -> torch.Tensor:
    """The decode of the fully masked state, 1 x 3 x H x W in [0, 1]: the
    predictor's guess with every one of the ``length`` positions hidden, as
    soft code vectors. No image is involved (the sampler's start)."""
    side = int(round(length**0.5))
    ids = torch.zeros(1, length, dtype=torch.long, device=device)
    probs = token_predictor.predict_probs(ids, torch.ones_like(ids, dtype=torch.bool))
    soft = tokenizer.soft_embed(probs.view(1, side, side, -1))
    return tokenizer.decode(soft).float().clamp(0, 1)
