"""ViTDet pieces: window / rel-pos attention in ADDPViT, the simple feature
pyramid, and the paper-scale COCO Mask R-CNN configs."""
import math
import os.path as osp
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_addp_vit import DEPTH, DIM, HEADS, released_addp_checkpoint
from timm.models.vision_transformer import Block

from mmaddp.models import ADDPViT, SimpleFeaturePyramid
from mmaddp.models.adapters import WindowBlock
from mmaddp.models.backbones.addp_vit import load_addp_encoder_state_dict
from conftest import build_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'b':
    osp.join(ROOT, 'configs', 'mask_rcnn',
             'mask-rcnn_addp-vit-base-p16_simple-fpn_lsj-1024_100e_coco.py'),
    'l':
    osp.join(ROOT, 'configs', 'mask_rcnn',
             'mask-rcnn_addp-vit-large-p16_simple-fpn_lsj-1024_100e_coco.py'),
}
C, NH = 16, 2  # block tests: channels, heads
ln = partial(nn.LayerNorm, eps=1e-6)


def make_block(window_size=0, use_rel_pos=False, input_size=None, seed=0):
    torch.manual_seed(seed)
    block = WindowBlock(
        C,
        NH,
        window_size=window_size,
        use_rel_pos=use_rel_pos,
        input_size=input_size,
        norm_layer=ln)
    for name, p in block.named_parameters():  # non-trivial norms and biases too
        if 'rel_pos' not in name:
            p.data.normal_(0, 0.3 if p.dim() > 1 else
                           0.1).add_(1.0 if 'norm' in name and name.endswith('weight') else 0)
    return block.eval()


def randomise_rel_pos(block, scale=0.5):
    block.attn.rel_pos_h.data.normal_(0, scale)
    block.attn.rel_pos_w.data.normal_(0, scale)


# ------------------------------------------------------------------ references
def table_at(table, offset):
    """Entry of a (2S-1) x d rel-pos table (offsets -(S-1)..S-1) for ``offset``;
    shared by all heads."""
    return table[offset + (table.shape[0] + 1) // 2 - 1]


def explicit_attention(attn, x, tables=None):
    """Multi-head attention of one h x w x C map written out head by head,
    with logits q.k/sqrt(d) + q.Rh[dy] + q.Rw[dx]."""
    h, w, c = x.shape
    hd = c // attn.num_heads
    tokens = x.reshape(h * w, c)
    q, k, v = (tokens @ attn.qkv.weight.T + attn.qkv.bias).split(c, dim=-1)
    coords = [(i // w, i % w) for i in range(h * w)]
    out = torch.zeros(h * w, c)
    for head in range(attn.num_heads):
        sl = slice(head * hd, (head + 1) * hd)
        logits = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
        if tables is not None:
            rel_h, rel_w = tables
            for i, (yi, xi) in enumerate(coords):
                for j, (yj, xj) in enumerate(coords):
                    logits[i, j] += q[i, sl] @ table_at(rel_h, yi - yj)
                    logits[i, j] += q[i, sl] @ table_at(rel_w, xi - xj)
        out[:, sl] = logits.softmax(-1) @ v[:, sl]
    return (out @ attn.proj.weight.T + attn.proj.bias).reshape(h, w, c)


def explicit_block(block, x, windowed, tables=None):
    """One WindowBlock written out: norm1, zero-pad, attention per window,
    crop, residual, MLP (x: B x H x W x C)."""
    outs = []
    ws = block.window_size
    for img in x:
        h, w, c = img.shape
        y = block.norm1(img)
        if windowed:
            y = F.pad(y, (0, 0, 0, -w % ws, 0, -h % ws))
            attended = torch.zeros_like(y)
            for r in range(0, y.shape[0], ws):
                for s in range(0, y.shape[1], ws):
                    attended[r:r + ws, s:s + ws] = explicit_attention(block.attn,
                                                                      y[r:r + ws, s:s + ws], tables)
            y = attended[:h, :w]
        else:
            y = explicit_attention(block.attn, y, tables)
        z = img + y
        outs.append(z + block.mlp(block.norm2(z)))
    return torch.stack(outs)


# ------------------------------------------------------------ window attention
@pytest.mark.parametrize('window_size', [5, 8])
def test_window_covering_the_map_is_global_attention(window_size):
    """A window >= the 4 x 5 map: exactly timm's Block on the flattened tokens
    (no padded tokens take part), with or without zero rel-pos tables."""
    x = torch.randn(2, 4, 5, C)
    for use_rel_pos in (False, True):
        block = make_block(window_size, use_rel_pos)
        ref = Block(C, NH, qkv_bias=True, norm_layer=ln).eval()
        state = {k: v for k, v in block.state_dict().items() if 'rel_pos' not in k}
        ref.load_state_dict(state, strict=True)  # timm parameter names
        with torch.no_grad():
            ours = block(x)
            theirs = ref(x.flatten(1, 2)).reshape(2, 4, 5, C)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize('use_rel_pos', [False, True])
def test_window_padding_matches_explicit_reference(use_rel_pos):
    """5 x 7 map, window 3: padded to 6 x 9, six windows per image, cropped."""
    block = make_block(window_size=3, use_rel_pos=use_rel_pos)
    if use_rel_pos:
        assert block.attn.rel_pos_h.shape == (5, C // NH)  # sized for the window
        randomise_rel_pos(block)
    x = torch.randn(2, 5, 7, C)
    with torch.no_grad():
        ours = block(x)
        tables = (block.attn.rel_pos_h, block.attn.rel_pos_w) if use_rel_pos else None
        expect = explicit_block(block, x, windowed=True, tables=tables)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, expect, atol=1e-5, rtol=0)
    if not use_rel_pos:  # windows differ from global attention over the map
        with torch.no_grad():
            assert (ours - explicit_block(block, x, windowed=False)).abs().max() > 1e-2


def test_rel_pos_zero_is_identity_and_nonzero_matches_reference():
    x = torch.randn(2, 3, 4, C)
    plain = make_block(0, use_rel_pos=False)
    rel = make_block(0, use_rel_pos=True, input_size=(3, 4))
    assert rel.attn.rel_pos_h.shape == (5, C // NH) and rel.attn.rel_pos_w.shape == (7, C // NH)
    assert not rel.attn.rel_pos_h.any()  # zero-initialised
    with torch.no_grad():
        torch.testing.assert_close(rel(x), plain(x), atol=1e-6, rtol=0)
        randomise_rel_pos(rel)
        ours = rel(x)
        assert (ours - plain(x)).abs().max() > 1e-2
        expect = explicit_block(
            rel, x, windowed=False, tables=(rel.attn.rel_pos_h, rel.attn.rel_pos_w))
    torch.testing.assert_close(ours, expect, atol=1e-5, rtol=0)


def test_rel_pos_window_larger_than_map_and_global_resize():
    x = torch.randn(1, 3, 4, C)
    # window 5 over a 3 x 4 map: the window's table read at the same offsets
    win = make_block(5, use_rel_pos=True)
    randomise_rel_pos(win)
    with torch.no_grad():
        expect = explicit_block(
            win, x, windowed=False, tables=(win.attn.rel_pos_h, win.attn.rel_pos_w))
        torch.testing.assert_close(win(x), expect, atol=1e-5, rtol=0)
    # a global block made for 4 x 4 on a 3 x 4 map: the height table (7
    # entries) is resized linearly to 5, the width table is used as is
    glob = make_block(0, use_rel_pos=True, input_size=(4, 4))
    randomise_rel_pos(glob)
    with torch.no_grad():
        rel_h = F.interpolate(glob.attn.rel_pos_h.T[None], size=5, mode='linear')[0].T
        expect = explicit_block(glob, x, windowed=False, tables=(rel_h, glob.attn.rel_pos_w))
        torch.testing.assert_close(glob(x), expect, atol=1e-5, rtol=0)


# -------------------------------------------------------------------- backbone
def windowed_backbone(**kwargs):
    kwargs.setdefault('img_size', 64)
    kwargs.setdefault('out_type', 'featmap')
    return ADDPViT(
        arch=dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS),
        with_cls_token=False,
        **kwargs)


def test_released_checkpoint_loads_into_windowed_backbone(tmp_path):
    ckpt = released_addp_checkpoint()
    path = tmp_path / 'addp-vit-tiny-16.pth'
    torch.save(ckpt, path)
    state = load_addp_encoder_state_dict(str(path), pos_embed_shape=(4, 4))
    model = windowed_backbone(window_size=2, global_attn_indexes=(1, 3), use_rel_pos=True)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all('.attn.rel_pos_' in k for k in result.missing_keys)
    assert len(result.missing_keys) == 2 * DEPTH
    assert [b.window_size for b in model.blocks] == [2, 0, 2, 0]
    assert model.blocks[0].attn.rel_pos_h.shape == (3, DIM // HEADS)  # window 2
    assert model.blocks[1].attn.rel_pos_h.shape == (7, DIM // HEADS)  # 4 x 4 grid

    # window 4 covers the 4 x 4 map, zero rel-pos: the released encoder run by
    # timm blocks on the patch tokens only (the class token dropped)
    model = windowed_backbone(
        window_size=4,
        global_attn_indexes=(1, ),
        use_rel_pos=True,
        out_type='raw',
        init_cfg=dict(type='Pretrained', checkpoint=str(path))).eval()
    model.init_weights()
    enc = ckpt['model']
    blocks = nn.Sequential(*[Block(DIM, HEADS, qkv_bias=True, norm_layer=ln)
                             for _ in range(DEPTH)]).eval()
    blocks.load_state_dict({
        k[len('blocks.'):]: v
        for k, v in enc.items() if k.startswith('blocks.')
    })
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = F.conv2d(
            x, enc['patch_embed.proj.weight'], enc['patch_embed.proj.bias'],
            stride=16).flatten(2).transpose(1, 2) + enc['pos_embed'][:, 1:]
        tokens = F.layer_norm(
            tokens, (DIM, ), enc['tokenizer_norm.weight'], enc['tokenizer_norm.bias'], eps=1e-6)
        expect = F.layer_norm(
            blocks(tokens), (DIM, ), enc['norm.weight'], enc['norm.bias'], eps=1e-6)
        out = model(x)[0]
    assert out.shape == (2, 16, DIM)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=0)
    assert not model.cls_token.requires_grad  # kept for loading, unused


def test_windowed_backbone_options():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 80, 48)  # 5 x 3 map: window 2 pads both sides
    model = windowed_backbone(
        window_size=2, global_attn_indexes=(-1, ), use_rel_pos=True, out_indices=[1, 3])
    model.init_weights()
    with torch.no_grad():
        outs = model.eval()(x)
    assert [o.shape for o in outs] == [(2, DIM, 5, 3)] * 2
    assert [b.window_size for b in model.blocks] == [2, 2, 2, 0]

    # window >= map equals global attention in the whole backbone
    glob = windowed_backbone(window_size=0)
    wide = windowed_backbone(window_size=8)
    glob.init_weights()
    wide.load_state_dict(glob.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(x)[0], glob.eval()(x)[0], atol=1e-5, rtol=0)

    # with_cp gives the same gradients; frozen stages and layer depths still work
    plain = windowed_backbone(window_size=2, use_rel_pos=True).train()
    plain.init_weights()
    for b in plain.blocks:
        randomise_rel_pos(b, 0.1)
    ckpt = windowed_backbone(window_size=2, use_rel_pos=True, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    for m in (plain, ckpt):
        m(x)[0].sum().backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-5, msg=n)
    assert plain.blocks[0].attn.rel_pos_h.grad.abs().sum() > 0
    assert plain.cls_token.grad is None

    frozen = windowed_backbone(
        window_size=2, use_rel_pos=True, frozen_stages=2, drop_path_rate=0.2).train()
    names = {n for n, p in frozen.named_parameters() if not p.requires_grad}
    assert 'blocks.1.attn.rel_pos_w' in names and 'blocks.2.attn.rel_pos_w' not in names
    assert not frozen.blocks[1].training and frozen.blocks[2].training
    assert frozen.get_layer_depth('backbone.blocks.2.attn.rel_pos_h', 'backbone.') == (3, 6)

    with pytest.raises(ValueError, match='with_cls_token=False'):
        ADDPViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2), window_size=4)
    with pytest.raises(ValueError, match='with_cls_token=False'):
        ADDPViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2), use_rel_pos=True)
    with pytest.raises(ValueError, match='global_attn_indexes'):
        ADDPViT(
            arch=dict(embed_dims=32, num_layers=2, num_heads=2),
            with_cls_token=False,
            window_size=4,
            global_attn_indexes=(5, ),
            out_type='featmap')
    with pytest.raises(ValueError, match='cls_token'):
        ADDPViT(
            arch=dict(embed_dims=32, num_layers=2, num_heads=2),
            with_cls_token=False,
            out_type='cls_token')
    with pytest.raises(ValueError, match='window_size'):
        ADDPViT(
            arch=dict(embed_dims=32, num_layers=2, num_heads=2),
            with_cls_token=False,
            window_size=-1,
            out_type='featmap')


def test_default_backbone_unchanged():
    model = ADDPViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2))
    assert all(type(b) is Block for b in model.blocks)
    assert not any('rel_pos' in k for k in model.state_dict())
    assert model.cls_token.requires_grad


# --------------------------------------------------------------------- pyramid
def test_simple_feature_pyramid():
    from mmcv.cnn import build_norm_layer
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    torch.manual_seed(0)
    backbone = ADDPViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=64,
        out_type='featmap',
        with_cls_token=False,
        window_size=2,
        global_attn_indexes=(1, ),
        use_rel_pos=True)
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=24))
    assert isinstance(neck, SimpleFeaturePyramid)
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 64, 64))
        outs = neck.eval()(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 24, s, s) for s in (16, 8, 4, 2, 1)]
    # the identity branch at stride 16 and the pooled extra level, written out
    lateral, fpn = neck.lateral_convs[2], neck.fpn_convs[2]
    with torch.no_grad():
        y = F.conv2d(feats[-1], lateral.conv.weight)
        y = F.layer_norm(
            y.permute(0, 2, 3, 1), (24, ), lateral.norm.weight, lateral.norm.bias,
            eps=1e-6).permute(0, 3, 1, 2)
        y = F.conv2d(y, fpn.conv.weight, padding=1)
        y = F.layer_norm(
            y.permute(0, 2, 3, 1), (24, ), fpn.norm.weight, fpn.norm.bias,
            eps=1e-6).permute(0, 3, 1, 2)
    assert lateral.conv.bias is None and fpn.conv.bias is None
    torch.testing.assert_close(outs[2], y, atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[4], outs[3][..., ::2, ::2])
    assert isinstance(neck.resamples[3], nn.MaxPool2d)
    deconvs = [m for m in neck.resamples[0] if isinstance(m, nn.ConvTranspose2d)]
    assert [m.stride for m in deconvs] == [(2, 2)] * 2

    # 'LN2d' from the mmdet scope (heads use it): LayerNorm over channels
    _, norm = build_norm_layer(dict(type='LN2d', eps=1e-6), 8)
    z = torch.randn(2, 8, 3, 5)
    torch.testing.assert_close(
        norm(z),
        F.layer_norm(z.permute(0, 2, 3, 1), (8, ), eps=1e-6).permute(0, 3, 1, 2))

    with pytest.raises(ValueError, match='scale_factors'):
        SimpleFeaturePyramid(32, scale_factors=(3, 1))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFeaturePyramid(32, num_outs=3)
    with pytest.raises(ValueError, match='B x 32 x H x W'):
        neck((torch.randn(1, 16, 4, 4), ))


# ---------------------------------------------------------- paper-scale configs
EXPECTED = {  # width, blocks, heads, global blocks, layer decay, drop path
    'b': (768, 12, 12, [2, 5, 8, 11], 0.7, 0.1),
    'l': (1024, 24, 16, [5, 11, 17, 23], 0.8, 0.4),
}


@pytest.mark.parametrize('arch', ['b', 'l'])
def test_paper_config_builds_and_trains_one_iteration(arch, demo_root, tmp_path):
    """The full-size model builds from the config as written; one training
    iteration then runs on CPU with the test's overrides: 2 backbone blocks
    (same width), 128 px inputs, window 3 (pads the 8 x 8 map), 32 sampled RoIs
    per image, the demo COCO data (10 classes), plain OptimWrapper
    (AmpOptimWrapper needs CUDA)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    width, depth, heads, global_idx, decay, dpr = EXPECTED[arch]
    cfg = Config.fromfile(CONFIGS[arch])
    assert cfg.pretrained == f'checkpoints/addp-vit-{ {"b": "base", "l": "large"}[arch]}-16.pth'
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.pretrained)
    assert cfg.train_cfg.max_iters == 184375 and cfg.train_dataloader.batch_size * 16 == 64
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.model.backbone.drop_path_rate == dpr
    assert cfg.val_dataloader.dataset.data_root == 'data/coco/'

    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)  # (init_weights skipped: ~20 s for ViT-L on CPU)
    bb = model.backbone
    assert (bb.embed_dims, len(bb.blocks), bb.blocks[0].attn.num_heads) == (width, depth, heads)
    assert [i for i, b in enumerate(bb.blocks) if b.window_size == 0] == global_idx
    assert {b.window_size for b in bb.blocks} == {0, 14}
    hd = bb.blocks[0].attn.head_dim
    assert bb.blocks[0].attn.rel_pos_h.shape == (27, hd)  # 14 x 14 window
    assert bb.blocks[global_idx[0]].attn.rel_pos_h.shape == (127, hd)  # 64 x 64 map
    assert model.roi_head.bbox_head.num_shared_convs == 4
    assert model.roi_head.bbox_head.num_classes == 80 and model.rpn_head.num_convs == 2
    wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, type='OptimWrapper'))
    scales = {g['param_name']: g['lr_scale'] for g in wrapper.optimizer.param_groups}
    assert scales['backbone.blocks.0.attn.qkv.weight'] == pytest.approx(decay**depth)
    assert scales['neck.fpn_convs.0.conv.weight'] == 1.0
    del model, wrapper, scales

    # one iteration of the same recipe, shrunk
    size = (128, 128)
    cfg.work_dir = str(tmp_path)
    cfg.model.backbone.update(
        arch=dict(embed_dims=width, num_layers=2, num_heads=heads),
        global_attn_indexes=(1, ),
        window_size=3,
        img_size=size)
    cfg.model.data_preprocessor.batch_augments[0].size = size
    cfg.model.roi_head.bbox_head.num_classes = 10
    cfg.model.roi_head.mask_head.num_classes = 10
    cfg.model.train_cfg.rcnn.sampler.num = 32  # RoIs per image (512 in the recipe)
    for t in cfg.train_pipeline:
        for key in ('scale', 'crop_size', 'size'):
            if key in t:
                t[key] = size
    data_root = osp.join(demo_root, 'coco') + '/'
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.update(
        data_root=data_root,
        pipeline=cfg.train_pipeline,
        metainfo=dict(classes=tuple('0123456789')))
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator', 'test_dataloader', 'test_cfg',
                'test_evaluator'):
        cfg[key] = None
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.default_hooks.checkpoint.update(interval=1000, save_last=False)
    cfg.default_hooks.logger.interval = 1
    runner = build_runner(cfg)
    bb = runner.model.backbone
    before = bb.blocks[0].attn.qkv.weight.detach().clone()
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss) and loss > 0
    assert not torch.equal(bb.blocks[0].attn.qkv.weight, before)
    assert bb.blocks[0].attn.rel_pos_h.abs().sum() > 0  # left zero, now trained
