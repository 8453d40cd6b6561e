"""ADDPViT against timm's VisionTransformer, and checkpoint loading."""
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from mmaddp.models import ADDPViT
from mmaddp.models.backbones.addp_vit import load_addp_encoder_state_dict
from release_layouts import addp_checkpoint

DIM, DEPTH, HEADS = 64, 4, 4


def timm_reference(img_size, pre_norm, dim=DIM, depth=DEPTH, heads=HEADS):
    ref = VisionTransformer(
        img_size=img_size,
        patch_size=16,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        qkv_bias=True,
        pre_norm=pre_norm,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0,
        global_pool='')
    # timm drops the patch-projection bias when pre_norm=True (CLIP style);
    # ADDP's encoder keeps it
    ref.patch_embed.proj = nn.Conv2d(3, dim, 16, 16, bias=True)
    return ref.eval()


def timm_state_from_encoder(state):
    """ADDPViT / release key names -> timm VisionTransformer key names."""
    out = {}
    for k, v in state.items():
        for old in ('pre_norm.', 'tokenizer_norm.'):
            if k.startswith(old):
                k = 'norm_pre.' + k[len(old):]
        out[k] = v
    return out


def make_backbone(pre_norm=True, **kwargs):
    kwargs.setdefault('img_size', 64)
    model = ADDPViT(
        arch=dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS), pre_norm=pre_norm, **kwargs)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('pre_norm', [True, False])
def test_features_match_timm(pre_norm):
    torch.manual_seed(0)
    model = make_backbone(pre_norm, out_type='raw')
    ref = timm_reference(64, pre_norm)
    ref.load_state_dict(timm_state_from_encoder(model.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)[0]
        theirs = ref.forward_features(x)
    assert ours.shape == (2, 1 + 16, DIM)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)

    # the other output types are views of the same features
    for out_type, expect in (('cls_token', theirs[:, 0]),
                             ('featmap', theirs[:, 1:].transpose(1, 2).reshape(2, DIM, 4, 4))):
        model.out_type = out_type
        with torch.no_grad():
            torch.testing.assert_close(model(x)[0], expect, atol=1e-5, rtol=0)


def test_out_indices_and_avg_featmap():
    torch.manual_seed(0)
    model = make_backbone(out_type='featmap', out_indices=[0, -1], final_norm=False)
    x = torch.randn(1, 3, 64, 96)  # non-square, any size divisible by 16
    with torch.no_grad():
        outs = model(x)
    assert [o.shape for o in outs] == [(1, DIM, 4, 6), (1, DIM, 4, 6)]
    assert not torch.allclose(outs[0], outs[1])

    pooled = make_backbone(out_type='avg_featmap', final_norm=False)
    pooled.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        vec = pooled(x)[0]
        expect = F.layer_norm(
            outs[1].flatten(2).mean(-1), (DIM, ),
            pooled.pooled_norm.weight,
            pooled.pooled_norm.bias,
            eps=1e-6)
    torch.testing.assert_close(vec, expect, atol=1e-5, rtol=0)

    with pytest.raises(ValueError, match='not divisible'):
        model(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match='out_indices'):
        ADDPViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2), out_indices=[5])
    with pytest.raises(KeyError, match='Unknown ADDPViT arch'):
        ADDPViT(arch='huge-typo')
    with pytest.raises(ValueError, match='Unknown keys'):
        ADDPViT(arch=dict(embed_dims=8, num_layers=1, num_heads=2, depth=3))


def test_archs():
    for arch, dims in (('b', (768, 12, 12)), ('l', (1024, 24, 16))):
        model = ADDPViT(arch=arch)
        assert (model.embed_dims, len(model.blocks), model.blocks[0].attn.num_heads) == dims
        assert all(b.attn.fused_attn for b in model.blocks)  # scaled_dot_product_attention


def test_frozen_stages_and_with_cp():
    torch.manual_seed(0)
    model = make_backbone(frozen_stages=2, drop_rate=0.1).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert {'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'pre_norm.weight'} <= set(frozen)
    assert all(n.startswith(('blocks.0.', 'blocks.1.')) for n in frozen if n.startswith('blocks'))
    assert not any(n.startswith('blocks.2.') for n in frozen)
    assert not model.blocks[0].training and not model.pos_drop.training
    assert model.blocks[2].training

    torch.manual_seed(0)
    plain = make_backbone(drop_path_rate=0.0).train()
    ckpt = make_backbone(drop_path_rate=0.0, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for m in (plain, ckpt):
        m(x)[0].sum().backward()
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-5, msg=n)


def test_layer_depth():
    model = ADDPViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2))  # 2 blocks -> depths 0..3
    depth = partial(model.get_layer_depth, prefix='backbone.')
    assert depth('backbone.cls_token') == (0, 4)
    assert depth('backbone.patch_embed.proj.weight') == (0, 4)
    assert depth('backbone.pre_norm.bias') == (0, 4)
    assert depth('backbone.blocks.0.attn.qkv.weight') == (1, 4)
    assert depth('backbone.blocks.1.mlp.fc2.bias') == (2, 4)
    assert depth('backbone.norm.weight') == (3, 4)
    assert depth('head.fc.weight') == (3, 4)


# ----------------------------------------------------------------- checkpoints
def released_addp_checkpoint(dim=DIM, depth=DEPTH, grid=4, dec_depth=2, vocab=2025, seed=0):
    """A file in the released addp-vit-*-16.pth layout, random weights."""
    return addp_checkpoint(
        dim=dim, depth=depth, grid=grid, dec_depth=dec_depth, vocab=vocab, seed=seed)


ENCODER_KEYS_SKIPPED = ('decoder', 'mask_token', 'token_emb', 'mlm_layer', 'vqgan.',
                        'token_predictor.', 'pos_token_embed', 'pos_mask_embed')


def test_released_checkpoint_loads_and_matches_timm(tmp_path):
    ckpt = released_addp_checkpoint()
    path = tmp_path / 'addp-vit-tiny-16.pth'
    torch.save(ckpt, path)

    # every encoder tensor is used, nothing else is kept
    state = load_addp_encoder_state_dict(str(path), pos_embed_shape=(4, 4))
    fresh = ADDPViT(arch=dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS), img_size=64)
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    model = make_backbone(out_type='raw', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    encoder = {k: v for k, v in ckpt['model'].items() if not k.startswith(ENCODER_KEYS_SKIPPED)}
    own = model.state_dict()
    assert set(own) == {k.replace('tokenizer_norm.', 'pre_norm.') for k in encoder}
    for k, v in encoder.items():
        assert torch.equal(own[k.replace('tokenizer_norm.', 'pre_norm.')], v), k

    ref = timm_reference(64, pre_norm=True)
    ref.load_state_dict(timm_state_from_encoder(encoder), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], ref.forward_features(x), atol=1e-5, rtol=0)

    # without pre_norm the release's tokenizer_norm is dropped, the rest loads
    no_pre = make_backbone(pre_norm=False, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    assert torch.equal(no_pre.blocks[0].attn.qkv.weight, encoder['blocks.0.attn.qkv.weight'])


@pytest.mark.parametrize('size', [224, 512])
def test_pos_embed_interpolated(tmp_path, size):
    ckpt = released_addp_checkpoint(dim=32, depth=2, grid=16)  # trained at 256 px
    path = tmp_path / 'addp.pth'
    torch.save(ckpt, path)
    model = ADDPViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=size,
        out_type='featmap',
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    grid = size // 16
    src = ckpt['model']['pos_embed']
    assert model.pos_embed.shape == (1, 1 + grid * grid, 32)
    expect = F.interpolate(
        src[:, 1:].reshape(1, 16, 16, 32).permute(0, 3, 1, 2),
        size=(grid, grid),
        mode='bicubic',
        align_corners=False)
    expect = torch.cat([src[:, :1], expect.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(model.pos_embed.data, expect, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, size, size))[0].shape == (1, 32, grid, grid)


def test_mmaddp_runner_checkpoint_loads(tmp_path):
    """A runner checkpoint (state_dict, 'backbone.' prefix, other parts) loads."""
    torch.manual_seed(0)
    src = make_backbone()
    state = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    state.update({
        'head.fc.weight': torch.zeros(10, DIM),
        'neck.decoder_embed.weight': torch.zeros(DIM, DIM),
        'tokenizer.quantize.embedding.weight': torch.zeros(8, 4)
    })
    path = tmp_path / 'iter_10.pth'
    torch.save({'meta': {'iter': 10}, 'state_dict': state}, path)
    model = make_backbone(img_size=128, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    for k, v in src.state_dict().items():
        if k != 'pos_embed':
            assert torch.equal(model.state_dict()[k], v), k
    assert model.pos_embed.shape == (1, 1 + 64, DIM)


def test_wrong_checkpoints_give_clear_errors(tmp_path):

    def load(obj, name, **kwargs):
        path = tmp_path / name
        if isinstance(obj, bytes):
            path.write_bytes(obj)
        else:
            torch.save(obj, path)
        make_backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)

    vq = {
        'state_dict': {
            'encoder.conv_in.weight': torch.zeros(8, 3, 3, 3),
            'quantize.embedding.weight': torch.zeros(16, 4)
        }
    }
    with pytest.raises(ValueError, match='VQ tokenizer'):
        load(vq, 'vqgan.ckpt')
    mage = {'model': {'token_emb.word_embeddings.weight': torch.zeros(2025, 8)}}
    with pytest.raises(ValueError, match='MAGE token predictor'):
        load(mage, 'mage.pth')
    with pytest.raises(ValueError, match='not a checkpoint with ADDP encoder weights'):
        load({'model': {'conv1.weight': torch.zeros(1)}}, 'resnet.pth')
    with pytest.raises(ValueError, match='not a readable torch file'):
        load(b'this is not a checkpoint', 'corrupt.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        make_backbone(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'missing.pth')))
    wide = released_addp_checkpoint(dim=32, depth=2)
    with pytest.raises(ValueError, match='does not fit this ADDPViT'):
        load(wide, 'wide.pth')
