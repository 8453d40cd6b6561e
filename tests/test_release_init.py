"""From-scratch initialisation as the release's (ADDP, as MAE and MAGE):
xavier_uniform Linear weights and flattened patch projection, zero biases,
LayerNorm 1 / 0, normal(0.02) tokens, token tables and position embeddings."""
import math

import pytest
import torch
import torch.nn as nn

from mmaddp.models import ADDPViT, TokenDecoder, TokenPredictor

WIDTH = 384  # wide enough that a 1 x 1 x C token's std is measured to ~4 %


def _check_linear_and_norms(module, skip=()):
    linears = [(n, m) for n, m in module.named_modules()
               if isinstance(m, nn.Linear) and not n.startswith(skip)]
    assert linears
    for name, m in linears:
        fan_out, fan_in = m.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        std = bound / math.sqrt(3)
        assert float(m.weight.std()) == pytest.approx(std, rel=0.1), name
        assert float(m.weight.abs().max()) <= bound, name  # uniform, not normal
        assert m.bias is None or float(m.bias.abs().max()) == 0, name
    for name, m in module.named_modules():
        if isinstance(m, nn.LayerNorm) and not name.startswith(skip):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name


def _check_normal_002(tensors):
    for name, t in tensors.items():
        assert float(t.std()) == pytest.approx(0.02, rel=0.1), name
        assert abs(float(t.mean())) < 0.01, name


def test_addp_vit_from_scratch():
    torch.manual_seed(0)
    vit = ADDPViT(
        arch=dict(embed_dims=WIDTH, num_layers=2, num_heads=6), img_size=64, out_type='avg_featmap')
    vit.init_weights()
    _check_linear_and_norms(vit)
    w = vit.patch_embed.proj.weight  # xavier of the (out, in * p * p) matrix
    std = math.sqrt(2 / (w.shape[0] + w[0].numel()))
    assert float(w.std()) == pytest.approx(std, rel=0.1)
    assert float(vit.patch_embed.proj.bias.abs().max()) == 0
    _check_normal_002(dict(cls_token=vit.cls_token, pos_embed=vit.pos_embed))


def test_token_decoder_from_scratch():
    torch.manual_seed(0)
    dec = TokenDecoder(in_channels=WIDTH, embed_dims=WIDTH, depth=2, num_heads=6, num_tokens=64)
    dec.init_weights()
    _check_linear_and_norms(dec)
    assert float(dec.mlm_layer.bias.abs().max()) == 0 and dec.mlm_layer.bias.shape == (1, 1, 2025)
    _check_normal_002(
        dict(
            mask_token=dec.mask_token,
            token_emb=dec.token_emb.weight,
            pos=dec.decoder_pos_embed_learned,
            pos_mask=dec.decoder_pos_mask_embed,
            pos_token=dec.decoder_pos_token_embed))


def test_token_predictor_from_scratch():
    torch.manual_seed(0)
    pred = TokenPredictor(
        arch=dict(
            embed_dims=WIDTH,
            depth=2,
            num_heads=6,
            decoder_embed_dims=WIDTH // 2,
            decoder_depth=1,
            decoder_num_heads=4),
        num_tokens=64)
    _check_linear_and_norms(pred)
    assert float(pred.mlm_layer.bias.abs().max()) == 0
    _check_normal_002(
        dict(
            words=pred.token_emb.word_embeddings.weight,
            positions=pred.token_emb.position_embeddings.weight,
            decoder_pos=pred.decoder_pos_embed_learned))


@pytest.mark.parametrize('build', [
    lambda cfg: ADDPViT(
        arch=dict(embed_dims=WIDTH, num_layers=1, num_heads=6), img_size=64, init_cfg=cfg),
    lambda cfg: TokenDecoder(
        in_channels=WIDTH, embed_dims=WIDTH, depth=1, num_heads=6, num_tokens=64, init_cfg=cfg),
    lambda cfg: TokenPredictor(
        arch=dict(
            embed_dims=WIDTH,
            depth=1,
            num_heads=6,
            decoder_embed_dims=WIDTH,
            decoder_depth=1,
            decoder_num_heads=6),
        num_tokens=64,
        init_cfg=cfg)
])
def test_explicit_init_cfg_replaces_the_layer_initialisers(build):
    """An mmengine init_cfg (dict or list) wins over xavier for the layers;
    the tokens and tables stay normal(0.02)."""
    torch.manual_seed(0)
    model = build([dict(type='Constant', layer='Linear', val=0.5, bias=0.)])
    model.init_weights()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(torch.equal(m.weight, torch.full_like(m.weight, 0.5)) for m in linears)
    tokens = [
        p for n, p in model.named_parameters()
        if n.endswith(('cls_token', 'mask_token', 'word_embeddings.weight'))
    ]
    _check_normal_002({str(i): t for i, t in enumerate(tokens)})


def test_init_cfg_may_redraw_token_tables():
    """Layer initialisers run after the release's normal(0.02) draws, so an
    init_cfg can give the nn.Embedding tables another std (the tiny
    predictor config does); bare tokens keep 0.02."""
    torch.manual_seed(0)
    pred = TokenPredictor(
        arch=dict(
            embed_dims=WIDTH,
            depth=1,
            num_heads=6,
            decoder_embed_dims=WIDTH,
            decoder_depth=1,
            decoder_num_heads=6),
        num_tokens=64,
        init_cfg=[
            dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
            dict(type='Normal', layer='Embedding', std=0.12)
        ])
    assert float(pred.token_emb.word_embeddings.weight.std()) == pytest.approx(0.12, rel=0.05)
    assert float(pred.blocks[0].attn.qkv.weight.std()) == pytest.approx(0.02, rel=0.05)
    _check_normal_002(dict(decoder_pos=pred.decoder_pos_embed_learned))
