"""MAGE's MLM layer: features -> logits over the token vocabulary.

Tied to the token table of the model that holds it and written here because
no installed package has it (BERT-style heads in transformers tie the table
with gradient; the release detaches it).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import layer_norm


class MlmLayer(nn.Module):
    """Linear -> GELU -> LayerNorm -> dot product with the *detached* token
    table + bias: logits over the whole vocabulary.

    As in the release (MAGE and ADDP), the table multiplies the output
    without gradient: it learns only where it embeds the input tokens.
    ``bias`` has the released shape 1 x 1 x vocab; a state dict with the
    bias as (vocab,), as mmaddp saved it before, is reshaped on load.

    Args:
        in_dim (int): width of the features.
        word_dim (int): width of the token table.
        vocab_size (int): rows of the token table.
    """

    def __init__(self, in_dim: int, word_dim: int, vocab_size: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, word_dim)
        self.ln = layer_norm(word_dim)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """Features B x N x in_dim, table vocab x word_dim -> logits B x N x vocab."""
        return self.ln(F.gelu(self.fc(x))) @ word_embeddings.detach().t() + self.bias

    @staticmethod
    def upgrade_state_dict(state: dict, prefix: str) -> None:
        """Reshape, in place, a bias saved as (vocab,) (mmaddp before it took
        the release's layout) to 1 x 1 x vocab (see
        :func:`mmaddp.checkpoint.load_state_into`)."""
        value = state.get(prefix + 'bias')
        if isinstance(value, torch.Tensor) and value.dim() == 1:
            state[prefix + 'bias'] = value.view(1, 1, -1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
