"""ViTDet-style transformer blocks on a patch-token map: window or global
attention with optional decomposed relative position terms.

timm ships the pieces this file reuses (window partition / unpartition and
the decomposed rel-pos bias of ``timm.models.vision_transformer_sam``), but its
SAM block cannot be used as is: its attention class is hard-wired in the block,
it always pads a map smaller than the window (so a window covering the whole
map is not global attention), and it interpolates rather than crops the window's
rel-pos table in that case. The block and attention below add exactly that,
with timm ``Block`` parameter names (``norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that released ADDP checkpoints load
into them unchanged.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp
from timm.models.vision_transformer_sam import (get_decomposed_rel_pos_bias, window_partition,
                                                window_unpartition)

from ..layers.attention import attention


def _central_rel_pos(table: torch.Tensor, size: int) -> torch.Tensor:
    """The ``2 * size - 1`` entries of a ``(2 * W - 1) x C`` table whose
    offsets lie in ``[-(size - 1), size - 1]`` (``size <= W``)."""
    centre = (table.shape[0] + 1) // 2  # index of offset 0 is centre - 1
    return table[centre - size:centre + size - 1]


class RelPosAttention(nn.Module):
    """Multi-head self-attention on a token map with optional decomposed
    relative position terms (MViTv2 / ViTDet), through
    ``F.scaled_dot_product_attention`` with the rel-pos bias as ``attn_mask``.

    Args:
        dim (int): channels C.
        num_heads (int): heads; must divide ``dim``.
        qkv_bias (bool): bias of the qkv projection.
        attn_drop (float): dropout on attention weights.
        proj_drop (float): dropout after the output projection.
        use_rel_pos (bool): add ``q . R_h[dy] + q . R_w[dx]`` to the logits;
            the tables (``rel_pos_h``, ``rel_pos_w``: ``(2 * S - 1) x C/heads``)
            start at zero.
        rel_pos_size (tuple[int, int], optional): the map size S_h x S_w the
            tables are made for; maps of another size interpolate them
            linearly, except when ``crop_rel_pos`` is set and the map is smaller.
        crop_rel_pos (bool): for a map smaller than ``rel_pos_size`` take the
            central entries (the same offsets) instead of interpolating; set
            for window blocks whose map fits in one window.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 use_rel_pos: bool = False,
                 rel_pos_size: Optional[Tuple[int, int]] = None,
                 crop_rel_pos: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.use_rel_pos = use_rel_pos
        self.crop_rel_pos = crop_rel_pos
        if use_rel_pos:
            if rel_pos_size is None or min(rel_pos_size) < 1:
                raise ValueError(f'use_rel_pos needs a positive rel_pos_size, got {rel_pos_size}')
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, self.head_dim))

    def rel_pos_tables(self, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The tables used for an h x w map (cropped when asked and smaller)."""
        rel_h, rel_w = self.rel_pos_h, self.rel_pos_w
        if self.crop_rel_pos:
            if 2 * h - 1 < rel_h.shape[0]:
                rel_h = _central_rel_pos(rel_h, h)
            if 2 * w - 1 < rel_w.shape[0]:
                rel_w = _central_rel_pos(rel_w, w)
        return rel_h, rel_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x C -> B x H x W x C."""
        b, h, w, c = x.shape
        n = h * w
        qkv = self.qkv(x.reshape(b, n, c)).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B x heads x N x C/heads
        bias = None
        if self.use_rel_pos:
            rel_h, rel_w = self.rel_pos_tables(h, w)
            # the bias uses the unscaled query, as in ViTDet
            bias = get_decomposed_rel_pos_bias(
                q.reshape(b * self.num_heads, n, -1), rel_h, rel_w, (h, w), (h, w))
            bias = bias.reshape(b, self.num_heads, n, n).to(q.dtype)
        x = attention(q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x)).reshape(b, h, w, c)


class WindowBlock(nn.Module):
    """Pre-norm transformer block on a B x H x W x C token map with window
    (``window_size > 0``) or global attention (ViTDet).

    A map not divisible by the window is zero-padded after ``norm1``, attended
    window by window (padded tokens take part, as in ViTDet) and cropped back.
    A map that fits in one window (H, W <= window) is attended as a whole with
    no padding, i.e. exactly global attention.

    Args:
        dim, num_heads, mlp_ratio, qkv_bias: as timm's ``Block``.
        proj_drop, attn_drop, drop_path: dropout rates.
        norm_layer: normalisation constructor (called with ``dim``).
        act_layer: MLP activation.
        window_size (int): window side; 0 for global attention.
        use_rel_pos (bool): decomposed relative position terms.
        input_size (tuple[int, int], optional): token map the rel-pos tables of
            a global block are made for (the backbone's ``img_size`` grid);
            window blocks size them for the window.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 proj_drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 norm_layer=nn.LayerNorm,
                 act_layer=nn.GELU,
                 window_size: int = 0,
                 use_rel_pos: bool = False,
                 input_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        if window_size < 0:
            raise ValueError(f'window_size must be >= 0 (0 = global), got {window_size}')
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = RelPosAttention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            use_rel_pos=use_rel_pos,
            rel_pos_size=(window_size, window_size) if window_size else input_size,
            crop_rel_pos=window_size > 0)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x C -> B x H x W x C."""
        if x.dim() != 4:
            raise ValueError(f'WindowBlock expects a B x H x W x C map, got shape {tuple(x.shape)}')
        _, h, w, _ = x.shape
        y = self.norm1(x)
        ws = self.window_size
        if ws and (h > ws or w > ws):
            windows, padded = window_partition(y, ws)
            y = window_unpartition(self.attn(windows), ws, (h, w), padded)
        else:
            y = self.attn(y)
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x)))
