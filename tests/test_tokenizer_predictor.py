"""VQTokenizer and TokenPredictor: released layouts load exactly, the API
contracts hold, and both run under autocast."""
import pytest
import torch
import torch.nn.functional as F

from mmaddp.models import TokenPredictor, VQTokenizer


# ----------------------------------------------------- released layouts
def _resblock(prefix, cin, cout, g):
    keys = {f'{prefix}.norm1.weight': (cin, ), f'{prefix}.norm1.bias': (cin, ),
            f'{prefix}.conv1.weight': (cout, cin, 3, 3), f'{prefix}.norm2.weight': (cout, ),
            f'{prefix}.norm2.bias': (cout, ), f'{prefix}.conv2.weight': (cout, cout, 3, 3)}
    if cin != cout:  # 1x1 on the branch output: out -> out
        keys[f'{prefix}.nin_shortcut.weight'] = (cout, cout, 1, 1)
    return keys


def released_vqgan_shapes(ch=32, mults=(1, 1, 2, 2, 4), nres=2, code=16, codes=64):
    """Key -> shape of vqgan_jax_strongaug.ckpt, written from the spec's text."""
    s = {'encoder.conv_in.weight': (ch, 3, 3, 3)}
    prev = ch
    for i, m in enumerate(mults):
        for j in range(nres):
            s.update(_resblock(f'encoder.down.{i}.block.{j}', prev, ch * m, 32))
            prev = ch * m
    for j in (1, 2):
        s.update(_resblock(f'encoder.mid.block_{j}', prev, prev, 32))
    s.update({'encoder.norm_out.weight': (prev, ), 'encoder.norm_out.bias': (prev, ),
              'encoder.conv_out.weight': (code, prev, 1, 1), 'encoder.conv_out.bias': (code, ),
              'decoder.conv_in.weight': (ch * mults[-1], code, 3, 3),
              'decoder.conv_in.bias': (ch * mults[-1], )})
    prev = ch * mults[-1]
    for j in (1, 2):
        s.update(_resblock(f'decoder.mid.block_{j}', prev, prev, 32))
    for i in reversed(range(len(mults))):
        for j in range(nres):
            s.update(_resblock(f'decoder.up.{i}.block.{j}', prev, ch * mults[i], 32))
            prev = ch * mults[i]
        if i > 0:
            s[f'decoder.up.{i}.upsample.conv.weight'] = (prev, prev, 3, 3)
            s[f'decoder.up.{i}.upsample.conv.bias'] = (prev, )
    s.update({'decoder.norm_out.weight': (ch, ), 'decoder.norm_out.bias': (ch, ),
              'decoder.conv_out.weight': (3, ch, 3, 3), 'decoder.conv_out.bias': (3, ),
              'quantize.embedding.weight': (codes, code)})
    return s


def _timm_block(prefix, d):
    return {f'{prefix}.norm1.weight': (d, ), f'{prefix}.norm1.bias': (d, ),
            f'{prefix}.attn.qkv.weight': (3 * d, d), f'{prefix}.attn.qkv.bias': (3 * d, ),
            f'{prefix}.attn.proj.weight': (d, d), f'{prefix}.attn.proj.bias': (d, ),
            f'{prefix}.norm2.weight': (d, ), f'{prefix}.norm2.bias': (d, ),
            f'{prefix}.mlp.fc1.weight': (4 * d, d), f'{prefix}.mlp.fc1.bias': (4 * d, ),
            f'{prefix}.mlp.fc2.weight': (d, 4 * d), f'{prefix}.mlp.fc2.bias': (d, )}


def released_mage_shapes(d=32, depth=2, dd=48, ddepth=2, vocab=2025, seq=257):
    s = {'token_emb.word_embeddings.weight': (vocab, d),
         'token_emb.position_embeddings.weight': (seq, d),
         'token_emb.LayerNorm.weight': (d, ), 'token_emb.LayerNorm.bias': (d, ),
         'norm.weight': (d, ), 'norm.bias': (d, ), 'decoder_embed.weight': (dd, d),
         'decoder_embed.bias': (dd, ), 'decoder_pos_embed_learned': (1, seq, dd),
         'decoder_norm.weight': (dd, ), 'decoder_norm.bias': (dd, ),
         'mlm_layer.fc.weight': (d, dd), 'mlm_layer.fc.bias': (d, ),
         'mlm_layer.ln.weight': (d, ), 'mlm_layer.ln.bias': (d, ), 'mlm_layer.bias': (vocab, )}
    for i in range(depth):
        s.update(_timm_block(f'blocks.{i}', d))
    for i in range(ddepth):
        s.update(_timm_block(f'decoder_blocks.{i}', dd))
    unused = {'pos_embed': (1, seq, d), 'decoder_pos_embed': (1, seq, dd),
              'decoder_pred.weight': (vocab, dd), 'decoder_pred.bias': (vocab, ),
              'cls_token': (1, 1, d), 'mask_token': (1, 1, dd)}
    return s, unused


def _random(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*v, generator=g) * 0.05 for k, v in shapes.items()}


def test_released_vqgan_loads_exactly(tmp_path):
    state = _random(released_vqgan_shapes())
    path = tmp_path / 'vqgan_jax_strongaug.ckpt'
    torch.save({'state_dict': state}, path)
    tok = VQTokenizer(base_channels=32, code_dim=16, num_codes=64)
    result = tok.load_checkpoint(str(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    own = tok.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert tok.downsample_factor == 16

    # the default arguments are the released architecture (names and shapes)
    full = {k: tuple(v.shape) for k, v in VQTokenizer().state_dict().items()}
    assert full == released_vqgan_shapes(ch=128, code=256, codes=1024)


def test_released_mage_loads_exactly(tmp_path):
    shapes, unused = released_mage_shapes()
    state = _random({**shapes, **unused})
    path = tmp_path / 'mage-vitb-1600.pth'
    torch.save({'model': state}, path)
    arch = dict(embed_dims=32, depth=2, num_heads=2, decoder_embed_dims=48, decoder_depth=2,
                decoder_num_heads=4)
    pred = TokenPredictor(arch=arch)
    result = pred.load_checkpoint(str(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    own = pred.state_dict()
    assert set(own) == set(shapes)
    assert all(torch.equal(own[k], state[k]) for k in shapes)
    # the named archs are MAGE ViT-B / ViT-L
    full_b = {k: tuple(v.shape) for k, v in TokenPredictor('b').state_dict().items()}
    assert full_b == released_mage_shapes(768, 12, 768, 8)[0]


def test_wrong_kind_of_checkpoint(tmp_path):
    shapes, _ = released_mage_shapes()
    torch.save({'model': _random(shapes)}, tmp_path / 'mage.pth')
    torch.save({'state_dict': _random(released_vqgan_shapes())}, tmp_path / 'vq.ckpt')
    with pytest.raises(ValueError, match='not a VQ tokenizer checkpoint'):
        VQTokenizer(base_channels=32, code_dim=16, num_codes=64,
                    checkpoint=str(tmp_path / 'mage.pth'))
    with pytest.raises(ValueError, match='not a MAGE token predictor checkpoint'):
        TokenPredictor(arch=dict(embed_dims=32, depth=2, num_heads=2, decoder_embed_dims=48,
                                 decoder_depth=2, decoder_num_heads=4),
                       checkpoint=str(tmp_path / 'vq.ckpt'))
    with pytest.raises(ValueError, match='does not fit'):
        VQTokenizer(base_channels=64, code_dim=16, num_codes=64,
                    checkpoint=str(tmp_path / 'vq.ckpt'))


# ------------------------------------------------------------ tokenizer API
@pytest.fixture(scope='module')
def tiny_tokenizer():
    torch.manual_seed(0)
    tok = VQTokenizer(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, code_dim=8,
                      num_codes=32, norm_groups=4, frozen=True)
    torch.nn.init.normal_(tok.quantize.embedding.weight)
    return tok


def test_quantization_is_nearest_neighbour(tiny_tokenizer):
    q = tiny_tokenizer.quantize
    z = torch.randn(3, 8, 5, 7) * 2
    _, ids = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(flat[None], q.embedding.weight[None])[0].argmin(1)
    assert torch.equal(ids.flatten(), brute)


def test_embed_soft_embed_decode(tiny_tokenizer):
    tok = tiny_tokenizer
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ids, vectors = tok.encode(images)
        assert ids.shape == (2, 4, 4) and vectors.shape == (2, 8, 4, 4)
        assert torch.equal(tok.embed(ids), vectors)
        onehot = F.one_hot(ids, 32).float()
        torch.testing.assert_close(tok.soft_embed(onehot), tok.embed(ids))
        probs = torch.rand(2, 4, 4, 32).softmax(-1)
        expect = torch.einsum('bhwk,kc->bchw', probs, tok.quantize.embedding.weight)
        torch.testing.assert_close(tok.soft_embed(probs), expect)
        torch.testing.assert_close(tok.decode_ids(ids), tok.decode(tok.embed(ids)))
        assert tok.decode_ids(ids).shape == (2, 3, 16, 16)


def test_frozen_tokenizer_stays_frozen(tiny_tokenizer):
    tiny_tokenizer.train()
    assert not tiny_tokenizer.training and not tiny_tokenizer.quantize.training
    assert not any(p.requires_grad for p in tiny_tokenizer.parameters())


def test_ema_and_dead_code_restart_move_codes():
    torch.manual_seed(0)
    tok = VQTokenizer(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, code_dim=8,
                      num_codes=16, norm_groups=4, ema_decay=0.5, restart_dead_codes=True)
    before = tok.quantize.embedding.weight.clone()
    losses = tok.loss(torch.rand(4, 3, 16, 16))
    assert set(losses) == {'loss_commit', 'loss_rec'}  # EMA replaces the codebook term
    assert not torch.equal(before, tok.quantize.embedding.weight)
    assert 'quantize.ema_cluster_size' in tok.state_dict()


# ---------------------------------------------------------- predictor API
@pytest.fixture(scope='module')
def tiny_predictor():
    torch.manual_seed(0)
    return TokenPredictor(arch=dict(embed_dims=32, depth=2, num_heads=2, decoder_embed_dims=32,
                                    decoder_depth=1, decoder_num_heads=2),
                          codebook_size=32, num_classes=1, class_id=32, num_tokens=16,
                          frozen=True)


def test_predict_probs_hides_masked_positions(tiny_predictor):
    pred = tiny_predictor
    ids = torch.randint(0, 32, (2, 16))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, ::3] = True
    probs = pred.predict_probs(ids, mask)
    assert probs.shape == (2, 16, 32)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 16))
    changed_masked = ids.clone()
    changed_masked[mask] = (ids[mask] + 7) % 32
    torch.testing.assert_close(pred.predict_probs(changed_masked, mask), probs, atol=0, rtol=0)
    changed_visible = ids.clone()
    changed_visible[0, 1] = (ids[0, 1] + 5) % 32
    assert not torch.allclose(pred.predict_probs(changed_visible, mask)[0], probs[0])
    with pytest.raises(ValueError, match='differ in shape'):
        pred.predict_probs(ids, mask[:, :8])


def test_masked_positions_share_the_class_vector(tiny_predictor):
    """With every position masked the input ids are all hidden: any ids give
    the same prediction (each masked position takes the class vector)."""
    pred = tiny_predictor
    ids = torch.randint(0, 32, (1, 16))
    all_masked = torch.ones(1, 16, dtype=torch.bool)
    a = pred.predict_probs(ids, all_masked)
    b = pred.predict_probs(torch.randint(0, 32, (1, 16)), all_masked)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_mask_ratio_sampling():
    from mmaddp.models.utils import TruncatedNormalMaskRatio
    sampler = TruncatedNormalMaskRatio()
    ratios = sampler.sample(20000, torch.Generator().manual_seed(0))
    assert ratios.min() >= 0.5 and ratios.max() <= 1.0
    # mean of N(0.55, 0.25) truncated to [0.5, 1]: 0.55 + 0.25 * (phi(a) - phi(b)) / Z
    from math import erf, exp, pi, sqrt
    a, b = (0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25
    phi = lambda x: exp(-x * x / 2) / sqrt(2 * pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + erf(x / sqrt(2)))  # noqa: E731
    expect = 0.55 + 0.25 * (phi(a) - phi(b)) / (cdf(b) - cdf(a))
    assert float(ratios.mean()) == pytest.approx(expect, abs=0.005)
    mask = sampler.sample_mask(64, 16, generator=torch.Generator().manual_seed(1))
    assert mask.sum(1).min() >= 8 and mask.sum(1).max() <= 16


@pytest.mark.parametrize('dtype', [torch.bfloat16])
def test_autocast(tiny_tokenizer, tiny_predictor, dtype):
    images = torch.rand(2, 3, 16, 16)
    ids = torch.randint(0, 32, (2, 16))
    mask = torch.rand(2, 16) < 0.5
    with torch.no_grad():
        ref_ids, _ = tiny_tokenizer.encode(images)
        ref_probs = tiny_predictor.predict_probs(ids, mask)
        with torch.autocast('cpu', dtype=dtype):
            amp_ids, amp_vec = tiny_tokenizer.encode(images)
            amp_img = tiny_tokenizer.decode(amp_vec)
            amp_probs = tiny_predictor.predict_probs(ids, mask)
    assert amp_img.dtype == dtype and amp_probs.dtype == torch.float32
    assert (amp_ids == ref_ids).float().mean() > 0.7
    assert (amp_probs - ref_probs).abs().max() < 0.05
