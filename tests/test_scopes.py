"""ADDPViT builds from mmpretrain, mmdet and mmseg configs; layer decay works
from each of them."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

from mmaddp.models import ADDPViT

CFG_DIR = osp.join(osp.dirname(__file__), 'configs')


def build(cfg_name):
    cfg = Config.fromfile(osp.join(CFG_DIR, cfg_name))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    registry = {
        'mmpretrain': 'mmpretrain.registry',
        'mmdet': 'mmdet.registry',
        'mmseg': 'mmseg.registry'
    }[cfg.default_scope]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    model = models.build(cfg.model)
    model.init_weights()
    return cfg, model


def lr_scales(cfg, model):
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    return {g['param_name']: g['lr'] / base_lr for g in wrapper.optimizer.param_groups}


@pytest.mark.parametrize('cfg_name,rate', [('tiny_cls.py', 0.65), ('tiny_det.py', 0.7),
                                           ('tiny_seg.py', 0.65)])
def test_build_and_layer_decay(cfg_name, rate):
    cfg, model = build(cfg_name)
    assert isinstance(model.backbone, ADDPViT)
    depth = model.backbone.num_layers
    scales = lr_scales(cfg, model)
    # depth d of (depth + 2) levels gets rate ** (depth + 2 - 1 - d)
    assert scales['backbone.patch_embed.proj.weight'] == pytest.approx(rate**(depth + 1))
    assert scales['backbone.cls_token'] == pytest.approx(rate**(depth + 1))
    for i in range(depth):
        assert scales[f'backbone.blocks.{i}.attn.qkv.weight'] == pytest.approx(rate**(depth - i))
    head_scales = [s for n, s in scales.items() if not n.startswith('backbone.')]
    assert head_scales and all(s == pytest.approx(1.0) for s in head_scales)
    assert len(scales) == sum(p.requires_grad for p in model.parameters())


def test_detector_computes_losses():
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    _, model = build('tiny_det.py')
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1., 1.)))
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 8:40] = 1
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[8., 8., 40., 40.]]),
        labels=torch.tensor([3]),
        masks=BitmapMasks(masks.numpy(), 64, 64))
    data = model.data_preprocessor(
        {
            'inputs': [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)],
            'data_samples': [sample]
        },
        training=True)
    losses = model(**data, mode='loss')
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        value = losses[key]
        value = sum(value) if isinstance(value, list) else value
        assert torch.isfinite(value).all(), key
    total = sum(v.sum()
                for k, v in losses.items() if 'loss' in k and isinstance(v, torch.Tensor)) + sum(
                    sum(v) for k, v in losses.items() if isinstance(v, list))
    total.backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_segmentor_features_and_output():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    _, model = build('tiny_seg.py')
    feats = model.extract_feat(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    sample = SegDataSample(
        metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
    sample.gt_sem_seg = PixelData(data=torch.randint(0, 11, (1, 64, 64)))
    losses = model(torch.randn(2, 3, 64, 64), [sample, sample], mode='loss')
    assert torch.isfinite(losses['decode.loss_ce']) and torch.isfinite(losses['aux.loss_ce'])
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), [sample], mode='predict')
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)
