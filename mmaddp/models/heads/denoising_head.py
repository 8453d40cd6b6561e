"""The ADDP loss: soft-target cross-entropy on the unreliable positions
(``F.cross_entropy`` with probability targets; the head only selects the
positions and pads the targets to the vocabulary)."""
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmaddp.registry import MODELS


@MODELS.register_module()
class DenoisingHead(BaseModule):
    """Cross-entropy between the decoder's logits (B x L x vocab) and the
    token predictor's probabilities q_t (B x L x codes, zero beyond the
    codes), with label smoothing, averaged over the positions in ``mask_t``.

    Args:
        label_smoothing (float): 0.1 in the release.
    """

    def __init__(self, label_smoothing: float = 0.1, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.label_smoothing = label_smoothing

    def loss(self, logits: torch.Tensor, target_probs: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        target = F.pad(target_probs.float(), (0, vocab - target_probs.shape[-1]))
        return F.cross_entropy(
            logits[mask].float(), target[mask], label_smoothing=self.label_smoothing)
