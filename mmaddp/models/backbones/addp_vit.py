"""The ADDP encoder: a plain ViT that reads pixels (``ADDPViT``)."""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmpretrain.models.utils import resize_pos_embed
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from mmaddp.checkpoint import load_state_into, read_state_dict
from mmaddp.registry import register_backbone
from ..adapters.code_token_embed import CodeTokenEmbed
from ..adapters.window_attention import WindowBlock
from ..layers import init_like_release, layer_norm, select_attention_kernel


def load_addp_encoder_state_dict(path: str,
                                 pos_embed_shape: Tuple[int, int],
                                 num_extra_tokens: int = 1,
                                 keep_pre_norm: bool = True,
                                 keep_pooled_norm: bool = True) -> Dict[str, torch.Tensor]:
    """``ADDPViT`` tensors of any checkpoint that holds an ADDP encoder (see
    :mod:`mmaddp.checkpoint.layouts`), the position embedding (1 x (extra +
    N) x C) resized bicubically to ``pos_embed_shape``.

    Args:
        path (str): the checkpoint file.
        pos_embed_shape (tuple[int, int]): the patch grid of the model.
        num_extra_tokens (int): class tokens in front. Defaults to 1.
        keep_pre_norm (bool): keep the LayerNorm before the blocks. Defaults to True.
        keep_pooled_norm (bool): keep the LayerNorm after pooling. Defaults to True.
    """
    state = read_state_dict(
        path, 'encoder', keep_pre_norm=keep_pre_norm, keep_pooled_norm=keep_pooled_norm)
    if 'pos_embed' in state:
        pos_embed = state['pos_embed']
        num_patches = pos_embed.shape[1] - num_extra_tokens
        side = int(round(num_patches**0.5))
        if side * side != num_patches:
            raise ValueError(f'pos_embed in {path} has {num_patches} patch positions, '
                             'which is not a square grid')
        if (side, side) != tuple(pos_embed_shape):
            MMLogger.get_current_instance().info(
                f'Resizing pos_embed from {side}x{side} to '
                f'{pos_embed_shape[0]}x{pos_embed_shape[1]} (bicubic)')
            state['pos_embed'] = resize_pos_embed(
                pos_embed.float(), (side, side),
                tuple(pos_embed_shape),
                mode='bicubic',
                num_extra_tokens=num_extra_tokens).to(pos_embed.dtype)
    return state


@register_backbone()
class ADDPViT(BaseModule):
    """The ADDP encoder as a backbone for classification, detection and
    segmentation.

    Pixels (normalised by the data preprocessor) -> 16x16 patch embedding ->
    learned absolute position embedding (class token included) -> optional
    LayerNorm (``pre_norm``) -> dropout -> timm ``Block`` s (qkv bias, LayerNorm eps 1e-6,
    attention by SDPA, or written out on CPU for narrow heads: see
    :mod:`mmaddp.models.layers.attention`) -> final LayerNorm.
    Parameter names follow the released ADDP checkpoint, except that the
    release's ``tokenizer_norm`` is called ``pre_norm`` here.

    ``pre_norm`` defaults to ``True``: the pretraining encoder has this
    LayerNorm, so with it the backbone computes exactly the features that
    pretraining learned (what the dense tasks, which have no released recipe,
    start from). The released ImageNet fine-tuning ViT has no such norm; the
    paper-reproduction classification configs set ``pre_norm=False`` to match
    the recipe behind the published top-1.

    Args:
        arch (str | dict): ``'b'`` (768/12/12), ``'l'`` (1024/24/16), the test
            sizes ``'tiny'`` (192/12/3), ``'nano'`` (64/4/4, the demo's), or a
            dict with mmpretrain's keys ``embed_dims``, ``num_layers``,
            ``num_heads`` and optionally ``feedforward_channels`` (or
            ``mlp_ratio``; the MLP is 4x wide otherwise). Defaults to ``'b'``.
        img_size (int | tuple): input size the position embedding is made for;
            other sizes divisible by ``patch_size`` are handled by bicubic
            interpolation on the fly.
        patch_size (int): patch size; equals the tokenizer's downsampling.
        in_channels (int): image channels.
        out_indices (int | Sequence[int]): blocks whose outputs are returned;
            negative indices count from the end.
        out_type (str): ``'featmap'`` (B x C x H/p x W/p per index),
            ``'avg_featmap'`` (mean of patch tokens then LayerNorm, B x C),
            ``'cls_token'`` (B x C) or ``'raw'`` (B x (1 + N) x C).
        pre_norm (bool): LayerNorm between embeddings and the first block.
        final_norm (bool): LayerNorm after the last block.
        drop_rate (float): dropout after adding position embeddings.
        attn_drop_rate (float): dropout on attention weights.
        drop_path_rate (float): stochastic depth, linearly increasing.
        frozen_stages (int): freeze the embeddings and the first
            ``frozen_stages`` blocks (and the final and pooled norms when all
            are frozen: the linear probe's fixed features); -1 or 0 freezes
            nothing.
        with_cp (bool): activation checkpointing of every block.
        with_cls_token (bool): prepend the class token. ``False`` runs the
            blocks on the patch-token map only (ViTDet); the class token and
            its position embedding stay as (frozen) parameters, so checkpoints
            load unchanged. Needed by the three options below.
        window_size (int): ViTDet window attention in every block not listed
            in ``global_attn_indexes``; 0 keeps global attention everywhere.
        global_attn_indexes (Sequence[int]): blocks that stay global, e.g.
            ``(2, 5, 8, 11)`` for ViT-B, ``(5, 11, 17, 23)`` for ViT-L.
        use_rel_pos (bool): decomposed relative position terms in every
            block, zero-initialised, sized for the window (window blocks) or
            the ``img_size`` grid (global blocks, interpolated for other maps).
        token_input (dict, optional): read the frozen tokenizer's code ids
            instead of pixels (the pixel-versus-token ablation):
            ``dict(tokenizer=dict(type='VQTokenizer', ..., checkpoint=PATH))``
            plus optionally the preprocessor's ``mean`` / ``std``; the patch
            embedding becomes a :class:`CodeTokenEmbed` (one learned vector
            per code, ``patch_size`` must equal the tokenizer's downsampling).
        init_cfg (dict, optional): ``None`` (default) initialises from scratch
            as the release (xavier_uniform Linears and flattened patch
            projection, normal(0.02) class token and position embedding; see
            :mod:`mmaddp.models.layers.release_init`);
            ``dict(type='Pretrained', checkpoint=PATH)`` loads a released ADDP
            checkpoint, a classifier fine-tuned by the release (its
            ``fc_norm`` becomes ``pooled_norm``) or an mmaddp checkpoint (see
            :func:`load_addp_encoder_state_dict`); any other mmengine
            ``init_cfg`` (dict or list) replaces the release's initialisers
            of the Linear / LayerNorm layers (tokens, position embedding and
            patch projection stay as the release's).
    """

    arch_zoo = {
        **dict.fromkeys(['b', 'base'], dict(embed_dims=768, num_layers=12, num_heads=12)),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=1024, num_layers=24, num_heads=16)),
        'tiny':
        dict(embed_dims=192, num_layers=12, num_heads=3),
        'nano':
        dict(embed_dims=64, num_layers=4, num_heads=4),
    }
    num_extra_tokens = 1  # the class token
    OUT_TYPES = ('featmap', 'avg_featmap', 'cls_token', 'raw')

    def __init__(self,
                 arch: Union[str, Dict] = 'b',
                 img_size: Union[int, Tuple[int, int]] = 256,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 pre_norm: bool = True,
                 final_norm: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 with_cls_token: bool = True,
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 use_rel_pos: bool = False,
                 token_input: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        num_heads = self.arch_settings['num_heads']
        mlp_ratio = self.arch_settings.get('mlp_ratio', 4.0)
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'Unsupported out_type {out_type!r}; choose one of {self.OUT_TYPES}')
        self.out_type = out_type
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = patch_size
        if any(s % patch_size for s in self.img_size):
            raise ValueError(
                f'img_size {self.img_size} is not divisible by patch_size {patch_size}')
        self.patch_resolution = tuple(s // patch_size for s in self.img_size)

        self.patch_embed = PatchEmbed(
            img_size=self.img_size,
            patch_size=patch_size,
            in_chans=in_channels,
            embed_dim=self.embed_dims,
            strict_img_size=False,
            dynamic_img_pad=False)
        if token_input is not None:
            self.patch_embed = CodeTokenEmbed(
                embed_dims=self.embed_dims, patch_size=patch_size, **token_input)
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_extra_tokens, self.embed_dims))
        self.pos_drop = nn.Dropout(p=drop_rate)
        self.pre_norm = layer_norm(self.embed_dims) if pre_norm else nn.Identity()

        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.with_cls_token = with_cls_token
        if with_cls_token:
            if window_size or use_rel_pos:
                raise ValueError('window_size / use_rel_pos run on the patch-token map: '
                                 'set with_cls_token=False to use them')
            self.blocks = nn.ModuleList([
                Block(
                    dim=self.embed_dims,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=True,
                    attn_drop=attn_drop_rate,
                    proj_drop=drop_rate,
                    drop_path=dpr[i],
                    norm_layer=layer_norm) for i in range(self.num_layers)
            ])
        else:
            if out_type == 'cls_token':
                raise ValueError("out_type='cls_token' needs with_cls_token=True")
            global_attn_indexes = sorted(
                {i + self.num_layers if i < 0 else i
                 for i in global_attn_indexes})
            if any(not 0 <= i < self.num_layers for i in global_attn_indexes):
                raise ValueError(f'global_attn_indexes {global_attn_indexes} out of range for '
                                 f'{self.num_layers} blocks')
            self.blocks = nn.ModuleList([
                WindowBlock(
                    self.embed_dims,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=True,
                    proj_drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[i],
                    norm_layer=layer_norm,
                    window_size=0 if i in global_attn_indexes else window_size,
                    use_rel_pos=use_rel_pos,
                    input_size=self.patch_resolution) for i in range(self.num_layers)
            ])
            self.cls_token.requires_grad = False  # kept only so checkpoints load
        self.final_norm = final_norm
        self.norm = layer_norm(self.embed_dims) if final_norm else nn.Identity()
        if out_type == 'avg_featmap':
            self.pooled_norm = layer_norm(self.embed_dims)

        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self.out_indices = []
        for index in out_indices:
            idx = index + self.num_layers if index < 0 else index
            if not 0 <= idx < self.num_layers:
                raise ValueError(
                    f'out_indices {index} is out of range for {self.num_layers} blocks')
            self.out_indices.append(idx)
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        if frozen_stages > 0:
            self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise KeyError(f'Unknown ADDPViT arch {arch!r}; choose one of '
                               f'{sorted(cls.arch_zoo)} or give a dict')
            return dict(cls.arch_zoo[key])
        required = {'embed_dims', 'num_layers', 'num_heads'}
        if not isinstance(arch, dict) or not required <= set(arch):
            raise ValueError(
                f'A custom arch must be a dict with keys {sorted(required)}, got {arch!r}')
        unknown = set(arch) - required - {'mlp_ratio', 'feedforward_channels'}
        if unknown:
            raise ValueError(f'Unknown keys {sorted(unknown)} in ADDPViT arch dict')
        arch = dict(arch)
        if 'feedforward_channels' in arch:  # mmpretrain's name for the MLP width
            if 'mlp_ratio' in arch:
                raise ValueError('give feedforward_channels or mlp_ratio in an arch dict, not both')
            arch['mlp_ratio'] = arch.pop('feedforward_channels') / arch['embed_dims']
        return arch

    # ------------------------------------------------------------------ init
    def init_weights(self):
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            self._load_pretrained(self.init_cfg['checkpoint'])
            self._is_init = True
            return
        # from scratch: the release's init, or the init_cfg initialisers for
        # the layers (the tokens and the patch projection as the release)
        embeddings = [self.pos_embed, self.cls_token]
        if isinstance(self.patch_embed, CodeTokenEmbed):
            embeddings.append(self.patch_embed.embedding.weight)
            projections = []
        else:
            projections = [self.patch_embed.proj]
        init_like_release([self],
                          embeddings=embeddings,
                          patch_projections=projections,
                          layer_init_cfg=self.init_cfg)
        self._is_init = True

    def _load_pretrained(self, checkpoint: str):
        state_dict = load_addp_encoder_state_dict(
            checkpoint,
            pos_embed_shape=self.patch_resolution,
            num_extra_tokens=self.num_extra_tokens,
            keep_pre_norm=not isinstance(self.pre_norm, nn.Identity),
            keep_pooled_norm=hasattr(self, 'pooled_norm'))
        if isinstance(self.patch_embed, CodeTokenEmbed):  # ids replace the pixel projection
            state_dict = {
                k: v
                for k, v in state_dict.items() if not k.startswith('patch_embed.proj.')
            }
        elif 'patch_embed.proj.weight' not in state_dict:
            raise ValueError(f'Checkpoint {checkpoint} is an encoder that reads tokenizer code '
                             'ids (token_input) and has no pixel patch projection; this '
                             'ADDPViT reads pixels: set token_input to load it')
        return load_state_into(self, state_dict, f'Checkpoint {checkpoint}')

    # --------------------------------------------------------------- freezing
    def _freeze_stages(self):
        frozen = [self.patch_embed, self.pre_norm, self.pos_drop]
        frozen += list(self.blocks[:self.frozen_stages])
        if self.frozen_stages >= self.num_layers:  # all blocks: the norms after them too
            frozen.append(self.norm)
            if hasattr(self, 'pooled_norm'):
                frozen.append(self.pooled_norm)
        self.cls_token.requires_grad = False
        self.pos_embed.requires_grad = False
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self

    # ---------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Images B x 3 x H x W (or, with ``token_input``, code ids B x h x w)
        -> tokens B x (1 + N) x C (B x N x C without the class token) and the
        patch grid."""
        if x.dtype == torch.int64:  # code ids, e.g. from a CodeIdDataset
            if not isinstance(self.patch_embed, CodeTokenEmbed):
                raise ValueError('ADDPViT got code ids (int64) but reads pixels: set '
                                 'token_input to read code ids')
            if x.dim() != 3:
                raise ValueError(f'Code ids must be B x h x w, got {tuple(x.shape)}')
            grid = tuple(x.shape[-2:])
        else:
            h, w = x.shape[-2:]
            if h % self.patch_size or w % self.patch_size:
                raise ValueError(f'Input size {h}x{w} is not divisible by patch_size '
                                 f'{self.patch_size}')
            grid = (h // self.patch_size, w // self.patch_size)
        x = self.patch_embed(x)
        pos_embed = self.pos_embed
        if grid != self.patch_resolution:
            pos_embed = resize_pos_embed(
                pos_embed,
                self.patch_resolution,
                grid,
                mode='bicubic',
                num_extra_tokens=self.num_extra_tokens)
        if self.with_cls_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        else:  # patch tokens only; the class token's position is dropped
            pos_embed = pos_embed[:, self.num_extra_tokens:]
        # the pretraining encoder's order: embeddings, LayerNorm, dropout
        return self.pos_drop(self.pre_norm(x + pos_embed)), grid

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Images B x 3 x H x W (H, W divisible by the patch size) -> a tuple
        with one output per ``out_indices`` entry, shaped by ``out_type``."""
        x, grid = self.embed(x)
        if not self.with_cls_token:  # window blocks work on B x H x W x C maps
            x = x.reshape(x.shape[0], *grid, x.shape[-1])
        outs = []
        if self.with_cls_token:
            select_attention_kernel(self.blocks, x.device)
        for i, block in enumerate(self.blocks):
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i == self.num_layers - 1:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, grid))
        return tuple(outs)

    def _format_output(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        extra = self.num_extra_tokens
        if x.dim() == 4:  # B x H x W x C patch-token map (no class token)
            x, extra = x.flatten(1, 2), 0
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patch_tokens = x[:, extra:]
        if self.out_type == 'avg_featmap':
            return self.pooled_norm(patch_tokens.mean(dim=1))
        b, _, c = patch_tokens.shape
        return patch_tokens.transpose(1, 2).reshape(b, c, *grid).contiguous()

    # ------------------------------------------------------------ layer decay
    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise lr decay.

        Embeddings (and ``pre_norm``) get depth 0, block ``i`` gets ``i + 1``,
        and everything after the blocks (final norm, pooled norm, and any
        module outside this backbone, such as heads or necks) the last depth.

        Returns:
            tuple[int, int]: the layer depth and the number of depths.
        """
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or name.startswith(('patch_embed', 'pre_norm')):
            depth = 0
        elif name.startswith('blocks.'):
            depth = int(name.split('.')[1]) + 1
        else:
            depth = num_layers - 1
        return depth, num_layers
