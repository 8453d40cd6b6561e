"""ADDP pretraining: the schedule, the loss against the spec written out,
checkpoints, and training with the tools."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope

from mmaddp.models.diffusion import MaskRatioSchedule
from mmaddp.registry import MODELS

CODES, L, WIDTH = 64, 16, 32


def tiny_addp(**overrides):
    cfg = dict(
        type='ADDP',
        backbone=dict(
            type='ADDPViT',
            arch=dict(embed_dims=WIDTH, num_layers=2, num_heads=2),
            img_size=32,
            patch_size=8,
            out_type='raw',
            drop_rate=0.1,
            attn_drop_rate=0.1),
        neck=dict(
            type='TokenDecoder',
            in_channels=WIDTH,
            embed_dims=WIDTH,
            depth=2,
            num_heads=2,
            num_tokens=L,
            vocab_size=CODES + 2),
        head=dict(type='DenoisingHead', label_smoothing=0.1),
        tokenizer=dict(
            type='VQTokenizer',
            base_channels=16,
            channel_mults=(1, 2, 2, 4),
            num_res_blocks=1,
            code_dim=16,
            num_codes=CODES,
            norm_groups=4),
        token_predictor=dict(
            type='TokenPredictor',
            arch=dict(
                embed_dims=32,
                depth=1,
                num_heads=2,
                decoder_embed_dims=32,
                decoder_depth=1,
                decoder_num_heads=2),
            codebook_size=CODES,
            num_classes=1,
            class_id=CODES,
            num_tokens=L))
    cfg.update(overrides)
    init_default_scope('mmpretrain')  # ADDP lives in the mmpretrain scope
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


# ---------------------------------------------------------------- schedule
def test_schedule_grid_and_masks():
    s = MaskRatioSchedule()
    expect = sorted(
        r for r in (math.cos(math.pi / 2 * k / 100) for k in range(101)) if 0.5 <= r < 1.0)
    assert s.ratios.tolist() == pytest.approx(expect)
    assert len(s.ratios) == 66 and s.ratios[-1] == pytest.approx(0.99988, abs=1e-5)
    assert s.num_masked(s.ratios[-1], 256) == 256  # fully masked states occur

    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        t, t_next = s.sample_steps(gen)
        assert t_next == min(t + (t_next - t), len(s.ratios) - 1) and 0 <= t_next - t <= 5
        assert t_next > t or t == len(s.ratios) - 1
        mask_t, mask_next = s.masks_for(3, 256, t, t_next, generator=gen)
        assert (mask_t.sum(1) == math.ceil(256 * float(s.ratios[t]))).all()
        assert (mask_next.sum(1) == min(256, math.ceil(256 * float(s.ratios[t_next])))).all()
        assert not (mask_t & ~mask_next).any()  # nested
        if 0 < int(mask_t[0].sum()) < 256:  # one noise vector per image
            assert not torch.equal(mask_t[0], mask_t[1])


def test_schedule_sampling_frequencies():
    """Step t ~ pdf of N(0.55, 0.25) on the grid; offsets uniform on 1..5."""
    s = MaskRatioSchedule()
    gen = torch.Generator().manual_seed(123)
    n = 40000
    draws = [s.sample_steps(gen) for _ in range(n)]
    counts = torch.bincount(torch.tensor([t for t, _ in draws]), minlength=len(s.ratios)).double()
    pdf = torch.exp(-0.5 * ((s.ratios - 0.55) / 0.25)**2)
    expect = pdf / pdf.sum() * n
    chi2 = float(((counts - expect)**2 / expect).sum())
    assert chi2 < 65 + 4 * math.sqrt(2 * 65)  # 65 degrees of freedom, ~4 sigma
    offsets = torch.tensor([b - a for a, b in draws if a < len(s.ratios) - 5])
    freq = torch.bincount(offsets, minlength=6)[1:].double() / len(offsets)
    assert torch.allclose(freq, torch.full((5, ), 0.2, dtype=torch.float64), atol=0.01)


# --------------------------------------------------------------------- loss
def _attention(block, x):
    """A timm block written out: pre-norm attention + MLP, no dropout."""
    b, n, c = x.shape
    heads = block.attn.num_heads
    h = F.layer_norm(x, (c, ), block.norm1.weight, block.norm1.bias, 1e-6)
    qkv = (h @ block.attn.qkv.weight.t() + block.attn.qkv.bias).view(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    att = ((q @ k.transpose(-1, -2)) / math.sqrt(c // heads)).softmax(-1)
    out = (att @ v).transpose(1, 2).reshape(b, n, c)
    x = x + out @ block.attn.proj.weight.t() + block.attn.proj.bias
    h = F.layer_norm(x, (c, ), block.norm2.weight, block.norm2.bias, 1e-6)
    h = F.gelu(h @ block.mlp.fc1.weight.t() + block.mlp.fc1.bias)
    return x + h @ block.mlp.fc2.weight.t() + block.mlp.fc2.bias


def reference_loss(model, images, mask_t, mask_next, table_in=None):
    """Steps 1-7 of ADDP_SPEC.md, written out. ``table_in``: the token table
    the reliable-token inputs read (default the decoder's); the MLM output
    always multiplies by the table detached."""
    tok, pred, enc, dec = model.tokenizer, model.token_predictor, model.backbone, model.neck
    table_in = dec.token_emb.weight if table_in is None else table_in
    with torch.no_grad():
        ids, e0 = tok.encode(images)  # 1
        b, h, w = ids.shape
        z0 = ids.flatten(1)
        p_next = pred.predict_probs(z0, mask_next)  # 3 (separate passes)
        q_t = pred.predict_probs(z0, mask_t)
        s = torch.einsum('blk,kc->blc', p_next, tok.quantize.embedding.weight)
        e0_seq = e0.flatten(2).transpose(1, 2)
        z_t = torch.where(mask_t[..., None], s, e0_seq)  # 4
        x_t = tok.decode(z_t.transpose(1, 2).reshape(b, -1, h, w))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x_t.clamp(0, 1) - mean) / std  # 5
    x = F.conv2d(x, enc.patch_embed.proj.weight, enc.patch_embed.proj.bias, stride=8)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([enc.cls_token.expand(b, -1, -1), x], 1) + enc.pos_embed
    x = F.layer_norm(x, (WIDTH, ), enc.pre_norm.weight, enc.pre_norm.bias, 1e-6)
    for blk in enc.blocks:
        x = _attention(blk, x)
    x = F.layer_norm(x, (WIDTH, ), enc.norm.weight, enc.norm.bias, 1e-6)
    losses = []
    for i in range(b):  # 6, per image
        y = x[i:i + 1] @ dec.decoder_embed.weight.t() + dec.decoder_embed.bias
        rows = []
        for j in range(L + 1):
            masked = j == 0 or bool(mask_t[i, j - 1])
            tokj = dec.mask_token[0, 0] if masked else y[0, j]
            unreliable = j > 0 and bool(mask_t[i, j - 1])
            posj = (dec.decoder_pos_mask_embed if unreliable else dec.decoder_pos_embed_learned)
            rows.append(tokj + posj[0, j])
        for j in range(L):
            if not mask_t[i, j]:
                rows.append(table_in[z0[i, j]] + dec.decoder_pos_token_embed[0, j + 1])
        y = torch.stack(rows)[None]
        for blk in dec.decoder_blocks:
            y = _attention(blk, y)
        y = F.layer_norm(y[0, 1:L + 1], (WIDTH, ), dec.decoder_norm.weight, dec.decoder_norm.bias,
                         1e-6)
        m = dec.mlm_layer
        hid = F.layer_norm(
            F.gelu(y @ m.fc.weight.t() + m.fc.bias), (WIDTH, ), m.ln.weight, m.ln.bias, 1e-6)
        logits = hid @ dec.token_emb.weight.detach().t() + m.bias.view(-1)
        vocab = logits.shape[-1]  # 7
        target = torch.zeros(L, vocab)
        target[:, :CODES] = q_t[i]
        target = 0.9 * target + 0.1 / vocab
        ce = -(target * logits.log_softmax(-1)).sum(-1)
        losses.append(ce[mask_t[i]])
    return torch.cat(losses).mean()


def test_denoising_loss_matches_spec():
    model = tiny_addp().eval()  # no dropout
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 32, 32, generator=gen)
    mask_t, mask_next = model.mask_schedule.masks_for(3, L, 10, 14, generator=gen)
    loss = model.denoising_loss(images, mask_t, mask_next)
    expect = reference_loss(model, images, mask_t, mask_next)
    torch.testing.assert_close(loss, expect, atol=1e-4, rtol=1e-4)

    # the fully masked state (the last grid point) and the least masked one
    for t, t_next in ((65, 65), (0, 1)):
        m_t, m_next = model.mask_schedule.masks_for(3, L, t, t_next, generator=gen)
        torch.testing.assert_close(
            model.denoising_loss(images, m_t, m_next),
            reference_loss(model, images, m_t, m_next),
            atol=1e-4,
            rtol=1e-4)

    loss.backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.neck.mask_token.grad.abs().sum() > 0
    for part in (model.tokenizer, model.token_predictor):
        assert all(p.grad is None and not p.requires_grad for p in part.parameters())
        assert not part.training


def test_token_table_learns_through_reliable_inputs_only():
    """The decoder's token_emb gradient after one step equals the gradient of
    the written-out loss through the reliable-token inputs alone (the
    release's detached MLM table), and is zero when no position is reliable."""
    model = tiny_addp().eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=gen)
    table = model.neck.token_emb.weight
    for t, t_next in ((0, 3), (10, 14), (40, 45)):  # mask ratios 0.51 / 0.64 / 0.92
        mask_t, mask_next = model.mask_schedule.masks_for(3, L, t, t_next, generator=gen)
        model.zero_grad()
        model.denoising_loss(images, mask_t, mask_next).backward()
        table_in = table.detach().clone().requires_grad_()
        reference_loss(model, images, mask_t, mask_next, table_in=table_in).backward()
        torch.testing.assert_close(table.grad, table_in.grad, atol=1e-6, rtol=1e-4)
        reliable_ids = set(model.tokenizer.encode(images)[0].flatten(1)[~mask_t].tolist())
        others = [i for i in range(table.shape[0]) if i not in reliable_ids]
        assert table.grad[others].abs().max() == 0  # e.g. every class id and the mask id
        assert table.grad[sorted(reliable_ids)].abs().sum(1).min() > 0

    # the fully masked state: no reliable input, no gradient at all
    mask_t, mask_next = model.mask_schedule.masks_for(3, L, 65, 65, generator=gen)
    assert mask_t.all()
    model.zero_grad()
    model.denoising_loss(images, mask_t, mask_next).backward()
    assert table.grad is None or table.grad.abs().max() == 0
    assert model.neck.mlm_layer.bias.grad.abs().max() > 0  # the output side still learns


def test_decoder_without_reliable_token_inputs_reads_the_encoder_only():
    """With ``reliable_token_inputs=False`` the logits depend on the image
    only through the encoder features: changing the ids changes nothing,
    while the release's decoder (the default) reads them."""
    torch.manual_seed(0)
    features = torch.randn(2, L + 1, 48)
    ids = torch.randint(0, CODES, (2, L))
    other_ids = (ids + 1 + torch.randint(0, CODES - 1, (2, L))) % CODES
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[:, :L // 2] = True
    for reliable_inputs in (True, False):
        torch.manual_seed(1)
        dec = MODELS.build(
            dict(
                type='TokenDecoder',
                in_channels=48,
                embed_dims=32,
                depth=1,
                num_heads=2,
                num_tokens=L,
                vocab_size=CODES + 2,
                drop_rate=0.0,
                reliable_token_inputs=reliable_inputs)).eval()
        dec.init_weights()
        with torch.no_grad():
            a, b = dec(features, ids, mask), dec(features, other_ids, mask)
            c = dec(features + torch.randn_like(features), ids, mask)
        assert a.shape == (2, L, CODES + 2)
        if reliable_inputs:
            assert (a - b).abs().max() > 1e-3
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (a - c).abs().max() > 1e-3  # the encoder features always count


def test_only_masked_positions_contribute():
    model = tiny_addp()
    logits = torch.randn(2, L, CODES + 2, requires_grad=True)
    target = torch.rand(2, L, CODES).softmax(-1)
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[:, :6] = True
    model.head.loss(logits, target, mask).backward()
    assert logits.grad[~mask].abs().max() == 0 and logits.grad[mask].abs().max() > 0
    target2 = target.clone()
    target2[~mask] = torch.rand(int((~mask).sum()), CODES).softmax(-1)
    assert model.head.loss(logits, target2, mask) == model.head.loss(logits, target, mask)


def test_frozen_parts_outside_optimizer():
    from mmengine.optim import build_optim_wrapper
    model = tiny_addp()
    wrapper = build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
            paramwise_cfg=dict(flat_decay_mult=0.0)))
    in_optimizer = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    frozen = [p for part in (model.tokenizer, model.token_predictor) for p in part.parameters()]
    assert frozen and not any(id(p) in in_optimizer for p in frozen)
    assert not any(k.startswith(('tokenizer.', 'token_predictor.')) for k in model.state_dict())
    model.train()
    assert not model.tokenizer.training and model.backbone.training


# -------------------------------------------------------------- checkpoints
def test_released_addp_checkpoint_loads(tmp_path):
    """The whole released file as saved (1 x 1 x vocab MLM biases, unused
    tables, vqgan.* and token_predictor.* copies) loads into every part."""
    from mmaddp.models import ADDPViT
    from release_layouts import addp_checkpoint, vqgan_shapes
    vq = vqgan_shapes(ch=16, mults=(1, 2, 2, 4), nres=1, code=16, codes=CODES, nmid=1)
    ckpt = addp_checkpoint(
        dim=WIDTH,
        depth=2,
        grid=4,
        dec_depth=2,
        vocab=CODES + 2,
        patch=8,
        vqgan=vq,
        mage=dict(d=32, depth=1, dd=32, ddepth=1, seq=L + 1))
    assert ckpt['model']['mlm_layer.bias'].shape == (1, 1, CODES + 2)
    assert ckpt['model']['token_predictor.mlm_layer.bias'].shape == (1, 1, CODES + 2)
    path = tmp_path / 'addp-vit-tiny-8.pth'
    torch.save(ckpt, path)
    model = tiny_addp().eval()
    result = model.load_checkpoint(str(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    state = ckpt['model']
    own = model.state_dict()
    for k, v in state.items():  # every tensor the model has is the file's
        if k.startswith(('blocks.', 'patch_embed.', 'cls_token', 'pos_embed', 'norm.')):
            assert torch.equal(own['backbone.' + k], v), k
        elif k.startswith(('decoder_', 'mask_token', 'token_emb.', 'mlm_layer.')) and \
                'neck.' + k in own:
            assert torch.equal(own['neck.' + k].view(v.shape), v), k
    pred_state = model.token_predictor.state_dict()
    assert all(torch.equal(v, state['token_predictor.' + k]) for k, v in pred_state.items())
    tok_state = model.tokenizer.state_dict()
    assert all(torch.equal(v, state['vqgan.' + k]) for k, v in tok_state.items())
    del ckpt['model']['token_predictor.token_emb.position_ids']  # not all copies have it
    for k in [k for k in ckpt['model'] if k.startswith('vqgan.')]:
        del ckpt['model'][k]
    torch.save(ckpt, path)
    model = tiny_addp(checkpoint=str(path)).eval()
    result = model.load_checkpoint(str(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(model.neck.decoder_pos_mask_embed, ckpt['model']['decoder_pos_mask_embed'])
    assert torch.equal(model.backbone.pre_norm.weight, ckpt['model']['tokenizer_norm.weight'])

    encoder = ADDPViT(
        arch=dict(embed_dims=WIDTH, num_layers=2, num_heads=2),
        img_size=32,
        patch_size=8,
        out_type='raw',
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    encoder.init_weights()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(x)[0], model.backbone(x)[0], atol=0, rtol=0)

    # an mmaddp runner checkpoint of ADDP feeds ADDPViT too
    runner_ckpt = tmp_path / 'iter_10.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, runner_ckpt)
    again = ADDPViT(
        arch=dict(embed_dims=WIDTH, num_layers=2, num_heads=2),
        img_size=32,
        patch_size=8,
        out_type='raw',
        init_cfg=dict(type='Pretrained', checkpoint=str(runner_ckpt)))
    again.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x)[0], model.backbone(x)[0], atol=0, rtol=0)

    with pytest.raises(ValueError, match='not an ADDP checkpoint'):
        torch.save({'state_dict': {'encoder.conv_in.weight': torch.zeros(1)}}, tmp_path / 'v.pth')
        model.load_checkpoint(str(tmp_path / 'v.pth'))

    # a genuinely wrong shape is refused, naming the tensor
    ckpt['model']['mlm_layer.bias'] = torch.zeros(1, 1, CODES + 5)
    torch.save(ckpt, tmp_path / 'wrong.pth')
    with pytest.raises(ValueError, match=r'neck\.mlm_layer\.bias: checkpoint \(1, 1, 69\)'):
        model.load_checkpoint(str(tmp_path / 'wrong.pth'))


def test_mmaddp_addp_checkpoint_with_flat_bias_still_loads(tmp_path):
    """An ADDP runner checkpoint written before the release's bias shape."""
    from mmengine.runner.checkpoint import load_checkpoint
    src = tiny_addp()
    state = dict(src.state_dict())
    state['neck.mlm_layer.bias'] = torch.randn(CODES + 2)
    path = tmp_path / 'iter_600.pth'
    torch.save({'meta': {}, 'state_dict': state}, path)
    for load in (lambda m: m.load_checkpoint(str(path)),
                 lambda m: load_checkpoint(m, str(path), strict=True)):
        model = tiny_addp()
        load(model)
        assert torch.equal(model.neck.mlm_layer.bias.flatten(), state['neck.mlm_layer.bias'])
        assert torch.equal(model.neck.token_emb.weight, state['neck.token_emb.weight'])
