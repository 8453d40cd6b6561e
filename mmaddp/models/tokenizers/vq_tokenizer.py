"""The VQ tokenizer (a VQGAN without attention): images <-> code ids.

Written here because neither timm nor the OpenMMLab packages in use ship a
VQGAN encoder/decoder or a vector quantizer (mmagic is not a dependency),
and the released checkpoint layout has to be matched key for key.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel

from mmaddp.checkpoint import load_state_into, read_state_dict
from mmaddp.registry import MODELS
from ..utils.data_preprocessor import UNIT_RANGE_PREPROCESSOR


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


class ResidualBlock(nn.Module):
    """GroupNorm-swish-conv twice. When the width changes, the released
    tokenizer applies its 1x1 ``nin_shortcut`` to the *branch output*:
    ``out = shortcut(h) + h`` (not ``shortcut(x) + h``)."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int = 32):
        super().__init__()
        self.norm1 = _group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.nin_shortcut = (
            nn.Conv2d(out_channels, out_channels, 1, bias=False)
            if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(h) if self.nin_shortcut is not None else x) + h


class _Level(nn.Module):
    """One resolution: ``block.{j}`` residual blocks (+ ``upsample.conv``)."""

    def __init__(self, channels: Sequence[int], norm_groups: int, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(
            ResidualBlock(cin, cout, norm_groups) for cin, cout in zip(channels[:-1], channels[1:]))
        if upsample:
            self.upsample = nn.Module()
            self.upsample.conv = nn.Conv2d(channels[-1], channels[-1], 3, padding=1)


class _Mid(nn.Module):

    def __init__(self, channels: int, num_blocks: int, norm_groups: int):
        super().__init__()
        for j in range(num_blocks):
            setattr(self, f'block_{j + 1}', ResidualBlock(channels, channels, norm_groups))
        self.num_blocks = num_blocks

    def forward(self, x):
        for j in range(self.num_blocks):
            x = getattr(self, f'block_{j + 1}')(x)
        return x


class VQEncoder(nn.Module):
    """Image B x 3 x H x W -> pre-quantization vectors B x C x H/f x W/f,
    f = 2 ** (len(channel_mults) - 1); 2x2 average pooling between levels.
    Runs channels-last inside (oneDNN's CPU convolutions on these small maps:
    ~20 % faster measured, same values to 1e-6); returns a contiguous tensor."""

    def __init__(self, base_channels, channel_mults, num_res_blocks, code_dim, norm_groups):
        super().__init__()
        widths = [base_channels * m for m in channel_mults]
        self.conv_in = nn.Conv2d(3, base_channels, 3, padding=1, bias=False)
        prev = base_channels
        self.down = nn.ModuleList()
        for w in widths:
            self.down.append(_Level([prev] + [w] * num_res_blocks, norm_groups))
            prev = w
        self.mid = _Mid(prev, num_res_blocks, norm_groups)
        self.norm_out = _group_norm(prev, norm_groups)
        self.conv_out = nn.Conv2d(prev, code_dim, 1)

    def forward(self, x):
        x = self.conv_in(x.contiguous(memory_format=torch.channels_last))
        for i, level in enumerate(self.down):
            for block in level.block:
                x = block(x)
            if i < len(self.down) - 1:
                x = F.avg_pool2d(x, 2)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()


class VQDecoder(nn.Module):
    """Code vectors B x C x h x w -> image B x 3 x h*f x w*f in [0, 1] scale.
    Levels are listed from the highest resolution (``up.0``) and run from the
    lowest; nearest 2x upsampling + 3x3 conv after every level but ``up.0``.
    Channels-last inside, like the encoder."""

    def __init__(self, base_channels, channel_mults, num_res_blocks, code_dim, norm_groups):
        super().__init__()
        widths = [base_channels * m for m in channel_mults]
        self.conv_in = nn.Conv2d(code_dim, widths[-1], 3, padding=1)
        self.mid = _Mid(widths[-1], num_res_blocks, norm_groups)
        levels = [None] * len(widths)
        prev = widths[-1]
        for i in reversed(range(len(widths))):
            levels[i] = _Level([prev] + [widths[i]] * num_res_blocks, norm_groups, upsample=i > 0)
            prev = widths[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(widths[0], norm_groups)
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z):
        x = self.mid(self.conv_in(z.contiguous(memory_format=torch.channels_last)))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for block in level.block:
                x = block(x)
            if i > 0:
                x = level.upsample.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()


class VectorQuantizer(nn.Module):
    """Nearest code by L2 distance over ``embedding.weight`` (K x C).

    With ``ema_decay`` the codebook follows exponential moving averages of the
    vectors assigned to each code (no codebook loss needed), and with
    ``restart_dead_codes`` codes unused for a while are re-seeded from the
    batch: a code whose recent use falls below ``dead_code_threshold`` times
    the uniform rate (averaged with ``usage_decay``) takes a random vector
    of the current batch. Both keep their statistics in buffers that exist
    only when enabled, so the default layout equals the released one.
    """

    def __init__(self,
                 num_codes: int,
                 code_dim: int,
                 ema_decay: Optional[float] = None,
                 restart_dead_codes: bool = False,
                 dead_code_threshold: float = 0.03,
                 usage_decay: float = 0.9):
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.embedding = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        self.ema_decay = ema_decay
        self.restart_dead_codes = restart_dead_codes
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        if ema_decay is not None:
            self.embedding.weight.requires_grad_(False)
            self.register_buffer('ema_cluster_size', torch.ones(num_codes))
            self.register_buffer('ema_embed_sum', self.embedding.weight.data.clone())
        if restart_dead_codes:
            self.register_buffer('usage', torch.ones(num_codes))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """N x C vectors -> N ids of the nearest codes (computed in fp32, also
        under autocast)."""
        with torch.autocast(flat.device.type, enabled=False):
            flat = flat.float()
            codes = self.embedding.weight.float()
            dist = (
                flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None])
            return dist.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """B x C x h x w -> (quantized B x C x h x w, ids B x h x w)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        ids = self.nearest(flat)
        if self.training:
            with torch.autocast(flat.device.type, enabled=False):  # EMA sums in fp32
                self._update(flat.detach().float(), ids)
        quant = self.embedding(ids).view(b, h, w, c).permute(0, 3, 1, 2).to(z.dtype)
        return quant, ids.view(b, h, w)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, ids: torch.Tensor):
        onehot = F.one_hot(ids, self.num_codes).float()
        counts = onehot.sum(0)
        if self.ema_decay is not None:
            d = self.ema_decay
            self.ema_cluster_size.mul_(d).add_(counts, alpha=1 - d)
            self.ema_embed_sum.mul_(d).add_(onehot.t() @ flat, alpha=1 - d)
            n = self.ema_cluster_size.sum()
            size = (self.ema_cluster_size + 1e-5) / (n + self.num_codes * 1e-5) * n
            self.embedding.weight.data.copy_(self.ema_embed_sum / size[:, None])
        if self.restart_dead_codes:
            # usage relative to uniform use (1.0), averaged over ~1 / (1 - decay) steps
            d = self.usage_decay
            self.usage.mul_(d).add_(counts * (self.num_codes / max(len(ids), 1)), alpha=1 - d)
            dead = (self.usage < self.dead_code_threshold).nonzero().flatten()
            if len(dead):
                pick = torch.randint(0, len(flat), (len(dead), ), device=flat.device)
                self.embedding.weight.data[dead] = flat[pick].to(self.embedding.weight.dtype)
                self.usage[dead] = 1.0
                if self.ema_decay is not None:
                    self.ema_cluster_size[dead] = 1.0
                    self.ema_embed_sum[dead] = flat[pick]


@MODELS.register_module()
class VQTokenizer(BaseModel):
    """VQ tokenizer of ADDP (MAGE's VQGAN layout): images in [0, 1] <-> ids.

    The default arguments build the released ``vqgan_jax_strongaug.ckpt``
    (base 128 channels, multipliers (1, 1, 2, 2, 4), 2 residual blocks, 256-d
    codes, 1024 codes, 16x downsampling), which ``checkpoint=PATH`` loads with
    no missing or unexpected key. Key names follow that file.

    Training (``mode='loss'``): reconstruction L2 + codebook term + ``beta`` x
    commitment term with a straight-through estimator; with ``ema_decay`` the
    codebook is updated by EMA instead of the codebook term.

    Args:
        base_channels, channel_mults, num_res_blocks, code_dim, num_codes:
            the architecture.
        norm_groups (int): GroupNorm groups (32 in the release).
        beta (float): commitment weight.
        ema_decay (float, optional): EMA codebook decay (e.g. 0.99).
        restart_dead_codes (bool): re-seed unused codes from the batch.
        frozen (bool): eval mode and no gradients, for use inside ADDP.
        checkpoint (str, optional): a released or mmaddp tokenizer file.
        data_preprocessor (dict, optional): defaults to scaling uint8
            images to [0, 1].
    """

    def __init__(self,
                 base_channels: int = 128,
                 channel_mults: Sequence[int] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2,
                 code_dim: int = 256,
                 num_codes: int = 1024,
                 norm_groups: int = 32,
                 beta: float = 0.25,
                 ema_decay: Optional[float] = None,
                 restart_dead_codes: bool = False,
                 frozen: bool = False,
                 checkpoint: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            data_preprocessor=data_preprocessor or dict(UNIT_RANGE_PREPROCESSOR), init_cfg=init_cfg)
        args = (base_channels, channel_mults, num_res_blocks, code_dim, norm_groups)
        self.encoder = VQEncoder(*args)
        self.decoder = VQDecoder(*args)
        self.quantize = VectorQuantizer(num_codes, code_dim, ema_decay, restart_dead_codes)
        self.downsample_factor = 2**(len(channel_mults) - 1)
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.frozen = frozen
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    # ------------------------------------------------------------ loading
    def load_checkpoint(self, path: str):
        """Load ``vqgan_jax_strongaug.ckpt`` (``state_dict``) or an mmaddp
        checkpoint (runner ``state_dict``, optionally under ``tokenizer.``)."""
        state = read_state_dict(path, 'tokenizer')
        return load_state_into(self, state, f'Checkpoint {path}')

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    # ---------------------------------------------------------------- API
    def set_inference_format(self,
                             dtype: torch.dtype = torch.float32,
                             channels_last: bool = False,
                             encoder_dtype: Optional[torch.dtype] = None) -> None:
        """Hold the frozen decoder (and encoder) in ``dtype`` and memory format.

        Channels-last weights run the convolutions faster on CPU, bf16 ones
        faster still where the CPU has bf16 arithmetic (see
        ``benchmarks/results/pretrain_step.md``); inputs are converted on the
        way in. The codebook stays fp32 and the nearest-code search runs in
        fp32 whatever the features' dtype; an encoder in bf16 still moves
        some ids (2.2 % of the positions of the demo's val images with the
        test suite's tokenizer), so ``encoder_dtype=torch.float32`` keeps
        the ids exact.

        Args:
            dtype (torch.dtype): the decoder's. Defaults to torch.float32.
            channels_last (bool): Defaults to False.
            encoder_dtype (torch.dtype, optional): Defaults to ``dtype``.
        """
        if not self.frozen:
            raise RuntimeError('set_inference_format is for a frozen tokenizer; a trained one '
                               'keeps fp32 weights (use an autocast optimizer wrapper)')
        encoder_dtype = dtype if encoder_dtype is None else encoder_dtype
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self._io_formats = {}
        for name, part_dtype in (('encoder', encoder_dtype), ('decoder', dtype)):
            getattr(self, name).to(dtype=part_dtype, memory_format=fmt)
            if part_dtype != torch.float32 or channels_last:
                self._io_formats[name] = (part_dtype, fmt)

    def _to_io_format(self, part: str, x: torch.Tensor) -> torch.Tensor:
        fmt = getattr(self, '_io_formats', {}).get(part)
        return x if fmt is None else x.to(fmt[0]).contiguous(memory_format=fmt[1])

    def encode(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Images B x 3 x H x W in [0, 1] -> (ids B x h x w, code vectors
        B x C x h x w)."""
        quant, ids = self.quantize(self.encoder(self._to_io_format('encoder', images)))
        return ids, quant

    def decode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Code vectors B x C x h x w -> images B x 3 x H x W (in [0, 1] scale,
        not clamped; in the decoder's dtype)."""
        return self.decoder(self._to_io_format('decoder', vectors))

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, num_codes x code_dim."""
        return self.quantize.embedding.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids B x h x w -> code vectors B x C x h x w."""
        return self.quantize.embedding(ids).permute(0, 3, 1, 2)

    def soft_embed(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities B x h x w x K over codes -> the expected code vector
        B x C x h x w."""
        codes = self.quantize.embedding.weight
        return (probs.to(codes.dtype) @ codes).permute(0, 3, 1, 2)

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids B x h x w -> images B x 3 x H x W."""
        return self.decode(self.embed(ids))

    # ----------------------------------------------------------- training
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            ids, quant = self.encode(inputs)
            return self.decode(quant)
        raise ValueError(f'Invalid mode {mode!r}')

    def loss(self, inputs: torch.Tensor, data_samples=None) -> Dict[str, torch.Tensor]:
        z = self.encoder(inputs)
        quant, ids = self.quantize(z)
        losses = dict(loss_commit=self.beta * F.mse_loss(z, quant.detach()))
        if self.quantize.ema_decay is None:
            losses['loss_codebook'] = F.mse_loss(quant, z.detach())
        quant = z + (quant - z).detach()  # straight-through
        recon = self.decode(quant)
        losses['loss_rec'] = F.mse_loss(recon, inputs)
        return losses

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, data_samples=None) -> List[dict]:
        """Per image: reconstruction PSNR (dB, images clamped to [0, 1]) and
        the code ids, for :class:`ReconstructionMetric`."""
        ids, quant = self.encode(inputs)
        recon = self.decode(quant).clamp(0, 1)
        mse = (recon.float() - inputs.float()).pow(2).flatten(1).mean(1)
        psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
        return [dict(psnr=float(p), ids=i.flatten().cpu()) for p, i in zip(psnr, ids)]
