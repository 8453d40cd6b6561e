"""ViTDet's simple feature pyramid from a plain ViT's last stride-16 map.

Neither mmdet 3.3.0 nor mmseg 1.2.2 ship it as a package module (mmdet's
``SimpleFPN`` lives only in its source tree's ``projects/``), so it is written
here from mmcv ``ConvModule`` s. Its norm, a LayerNorm over channels of
B x C x H x W maps, is mmpretrain's ``LayerNorm2d`` (``'LN2d'``), which
mmpretrain registers only in its own scope; importing this module also
registers it in MMEngine's root model registry, so that mmdet and mmseg modules
(heads included) accept ``norm_cfg=dict(type='LN2d')``.
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmpretrain.models.utils.norm import LayerNorm2d

from mmaddp.registry import register_neck

if MMENGINE_MODELS.get('LN2d') is None:  # visible from every downstream scope
    MMENGINE_MODELS.register_module('LN2d', module=LayerNorm2d)


@register_neck()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid.

    From the last backbone map (B x C x H x W at stride 16) one branch per
    scale factor: x4 = deconv 2x2 (C -> C/2), norm, GELU, deconv 2x2
    (C/2 -> C/4); x2 = deconv 2x2 (C -> C/2); x1 = identity; x0.5 = 2x2
    max-pool. Each branch then has a 1x1 conv + norm and a 3x3 conv + norm (no
    bias, no activation). Extra levels (``num_outs`` beyond the branches) are
    1x1 max-pools with stride 2 of the last level (detectron2's
    ``LastLevelMaxPool``), so the default gives strides 4, 8, 16, 32, 64 for
    mmdet's RPN.

    Args:
        in_channels (int): channels C of the backbone map.
        out_channels (int): channels of every output level.
        scale_factors (Sequence[float]): branches, from the finest; each of
            4, 2, 1, 0.5.
        num_outs (int): output levels, at least ``len(scale_factors)``.
        norm_cfg (dict): norm of the convs and of the x4 branch.
        init_cfg (dict, optional): MMEngine init config.

    Inputs: a tuple (or list) of maps; only the last one is used.
    Outputs: a tuple of ``num_outs`` maps B x out_channels x (H*s) x (W*s).
    """

    SUPPORTED_SCALES = (4.0, 2.0, 1.0, 0.5)

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6, requires_grad=True),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        scale_factors = [float(s) for s in scale_factors]
        bad = [s for s in scale_factors if s not in self.SUPPORTED_SCALES]
        if bad or not scale_factors:
            raise ValueError(f'scale_factors must be taken from {self.SUPPORTED_SCALES}, '
                             f'got {scale_factors}')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs ({num_outs}) is smaller than the number of '
                             f'scale_factors ({len(scale_factors)})')
        if 4.0 in scale_factors and in_channels % 4 or 2.0 in scale_factors and in_channels % 2:
            raise ValueError(f'in_channels {in_channels} must be divisible by the upsampling '
                             f'branches (x4: by 4, x2: by 2)')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = scale_factors
        self.num_outs = num_outs

        self.resamples = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for scale in scale_factors:
            if scale == 4.0:
                dim = in_channels // 4
                resample = nn.Sequential(
                    nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2),
                    build_norm_layer(norm_cfg, in_channels // 2)[1], nn.GELU(),
                    nn.ConvTranspose2d(in_channels // 2, dim, 2, stride=2))
            elif scale == 2.0:
                dim = in_channels // 2
                resample = nn.ConvTranspose2d(in_channels, dim, 2, stride=2)
            elif scale == 1.0:
                dim, resample = in_channels, nn.Identity()
            else:
                dim, resample = in_channels, nn.MaxPool2d(kernel_size=2, stride=2)
            self.resamples.append(resample)
            self.lateral_convs.append(
                ConvModule(dim, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None))
            self.fpn_convs.append(
                ConvModule(
                    out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Tuple of B x C x H x W maps -> tuple of ``num_outs`` pyramid maps."""
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs, )
        x = inputs[-1]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SimpleFeaturePyramid expects a B x {self.in_channels} x H x W '
                             f'map, got shape {tuple(x.shape)}')
        outs = [
            fpn(lateral(resample(x)))
            for resample, lateral, fpn in zip(self.resamples, self.lateral_convs, self.fpn_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
