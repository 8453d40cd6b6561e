"""ADDP's token decoder: encoder features + reliable tokens -> logits.

ADDP-specific (mask-position embeddings, appended reliable tokens), so
written here on top of timm blocks and the MLM layer of the predictor.
"""
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.models.vision_transformer import Block

from mmaddp.registry import MODELS
from ..layers import MlmLayer, init_like_release, layer_norm, select_attention_kernel


@MODELS.register_module()
class TokenDecoder(BaseModule):
    """Predicts the next VQ tokens from the encoder's view of the pixels.

    1. ``decoder_embed`` projects the encoder tokens B x (1 + L) x C_enc.
    2. The class position and every position in ``mask_t`` become the learned
       ``mask_token``; positions add ``decoder_pos_embed_learned``, masked ones
       ``decoder_pos_mask_embed`` instead.
    3. One extra input per reliable (unmasked) position is appended: the token
       embedding of its id + ``decoder_pos_token_embed`` of that position.
    4. timm blocks, LayerNorm, MLM layer with ``token_emb`` detached -> logits
       B x L x vocab for the L image positions. As in the release, the token
       table gets gradient only through the reliable-token inputs of step 3.

    Key names follow the released ``addp-vit-*-16.pth``.

    Args:
        in_channels (int): encoder width.
        embed_dims, depth, num_heads, mlp_ratio: the decoder (release: encoder
            width, 8, 16, 4).
        num_tokens (int): L.
        vocab_size (int): codes + class ids + mask id (2025 in the release).
        drop_rate (float): dropout on attention weights and block outputs.
        reliable_token_inputs (bool): append the reliable tokens of step 3
            (default True, the release). False is an ablation for small
            scales: the decoder then learns about the image only through
            the encoder, which otherwise a decoder can bypass by reading the
            same ids the token predictor's targets were computed from
            (``docs/demo_schedules.md``).
    """

    def __init__(self,
                 in_channels: int = 768,
                 embed_dims: int = 768,
                 depth: int = 8,
                 num_heads: int = 16,
                 mlp_ratio: float = 4.0,
                 num_tokens: int = 256,
                 vocab_size: int = 2025,
                 drop_rate: float = 0.1,
                 reliable_token_inputs: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_tokens, self.vocab_size = num_tokens, vocab_size
        self.reliable_token_inputs = reliable_token_inputs
        self.decoder_embed = nn.Linear(in_channels, embed_dims)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dims))
        self.decoder_pos_mask_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dims))
        self.decoder_pos_token_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, embed_dims))
        self.token_emb = nn.Embedding(vocab_size, embed_dims)
        self.decoder_blocks = nn.ModuleList(
            Block(
                embed_dims,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                attn_drop=drop_rate,
                proj_drop=drop_rate,
                norm_layer=layer_norm) for _ in range(depth))
        self.decoder_norm = layer_norm(embed_dims)
        self.mlm_layer = MlmLayer(embed_dims, embed_dims, vocab_size)

    def init_weights(self):
        """The release's init from scratch (xavier_uniform Linears, normal(0.02)
        mask token, position embeddings and token table); an ``init_cfg``
        given in the config replaces the initialisers of the Linear /
        LayerNorm layers (the embeddings stay normal(0.02))."""
        init_like_release([self],
                          embeddings=[
                              self.mask_token, self.decoder_pos_embed_learned,
                              self.decoder_pos_mask_embed, self.decoder_pos_token_embed,
                              self.token_emb.weight
                          ],
                          layer_init_cfg=self.init_cfg)
        self._is_init = True

    def forward(self, features: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Encoder tokens B x (1 + L) x C, ids B x L, mask B x L (True =
        unreliable; the same count in every row) -> logits B x L x vocab."""
        b, length = ids.shape
        num_reliable = length - mask.sum(1)
        if not bool((num_reliable == num_reliable[0]).all()):
            raise ValueError('every row of mask must hide the same number of positions')
        x = self.decoder_embed(features)
        full = torch.cat([mask.new_ones(b, 1), mask], dim=1)  # class position replaced too
        x = torch.where(full[..., None], self.mask_token.to(x.dtype), x)
        pos_mask = torch.cat([mask.new_zeros(b, 1), mask], dim=1)
        x = x + torch.where(pos_mask[..., None], self.decoder_pos_mask_embed,
                            self.decoder_pos_embed_learned)
        if self.reliable_token_inputs:
            # reliable tokens: their id embedding + their position, in position order
            keep = (~mask).nonzero(as_tuple=True)
            n = int(num_reliable[0])
            extra = (self.token_emb(ids[keep]) + self.decoder_pos_token_embed[0, 1:][keep[1]]).view(
                b, n, x.shape[-1])
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        select_attention_kernel(self.decoder_blocks, x.device)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x[:, 1:length + 1])
        return self.mlm_layer(x, self.token_emb.weight)
