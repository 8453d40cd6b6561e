"""VQTokenizer and TokenPredictor: released layouts load exactly, the API
contracts hold, and both run under autocast."""
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from mmaddp.models import TokenPredictor, VQTokenizer
from release_layouts import mage_checkpoint, mage_shapes, random_state, vqgan_shapes


# ----------------------------------------------------- released layouts
def test_released_vqgan_loads_exactly(tmp_path):
    state = random_state(vqgan_shapes())
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
    assert full == vqgan_shapes(ch=128, code=256, codes=1024)


SMALL_MAGE = dict(
    embed_dims=32,
    depth=2,
    num_heads=2,
    decoder_embed_dims=48,
    decoder_depth=2,
    decoder_num_heads=4)


def test_released_mage_loads_exactly(tmp_path):
    """The whole MAGE file as saved: 1 x 1 x 2025 MLM bias, the unused MAE
    parts, position_ids and the vqgan copy."""
    state = mage_checkpoint()
    assert state['mlm_layer.bias'].shape == (1, 1, 2025)
    path = tmp_path / 'mage-vitb-1600.pth'
    torch.save({'model': state}, path)
    pred = TokenPredictor(arch=SMALL_MAGE)
    result = pred.load_checkpoint(str(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    used, _ = mage_shapes()
    own = pred.state_dict()
    assert set(own) == set(used)
    assert all(torch.equal(own[k], state[k]) for k in used)
    # the released bias is what the logits add
    ids = torch.randint(0, 1024, (2, 256))
    mask = torch.rand(2, 256) < 0.5
    with torch.no_grad():
        logits = pred.eval().logits(ids, mask)
        pred.mlm_layer.bias.zero_()
        without = pred.logits(ids, mask)
    torch.testing.assert_close(
        logits - without, state['mlm_layer.bias'][..., :1024].expand_as(logits), atol=1e-5, rtol=0)
    # the named archs are MAGE ViT-B / ViT-L (names and shapes)
    full_b = {k: tuple(v.shape) for k, v in TokenPredictor('b').state_dict().items()}
    assert full_b == mage_shapes(768, 12, 768, 8)[0]


def test_mage_checkpoint_of_wrong_shape_is_refused(tmp_path):
    state = mage_checkpoint()
    state['mlm_layer.bias'] = torch.zeros(1, 1, 2000)  # another vocabulary
    torch.save({'model': state}, tmp_path / 'mage.pth')
    with pytest.raises(
            ValueError, match=r'mlm_layer\.bias: checkpoint \(1, 1, 2000\) vs '
            r'model \(1, 1, 2025\)'):
        TokenPredictor(arch=SMALL_MAGE, checkpoint=str(tmp_path / 'mage.pth'))


def test_mmaddp_predictor_checkpoint_with_flat_bias_still_loads(tmp_path):
    """Files mmaddp wrote before the release's bias shape (vocab,) load,
    through load_checkpoint and through the runner's loader."""
    from mmengine.runner.checkpoint import load_checkpoint
    torch.manual_seed(0)
    src = TokenPredictor(arch=SMALL_MAGE)
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state['mlm_layer.bias'] = torch.randn(2025)
    path = tmp_path / 'iter_100.pth'
    torch.save({'meta': {}, 'state_dict': state}, path)
    for load in (lambda m: m.load_checkpoint(str(path)),
                 lambda m: load_checkpoint(m, str(path), strict=True)):
        model = TokenPredictor(arch=SMALL_MAGE)
        load(model)
        assert model.mlm_layer.bias.shape == (1, 1, 2025)
        assert torch.equal(model.mlm_layer.bias.flatten(), state['mlm_layer.bias'])


def test_predictor_table_learns_through_inputs_only():
    """MAGE multiplies the output by the detached word table: rows of ids
    that no input shows get no gradient (with the table in the output they
    all would, through the softmax)."""
    torch.manual_seed(0)
    pred = TokenPredictor(
        arch=SMALL_MAGE, codebook_size=64, num_classes=1, class_id=64, num_tokens=16).eval()
    ids = torch.randint(0, 32, (2, 16))  # codes 32..63 never appear
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :8] = True
    logits = pred.logits(ids, mask)
    F.cross_entropy(logits[mask], ids[mask]).backward()
    grad = pred.token_emb.word_embeddings.weight.grad
    shown = set(ids[~mask].tolist()) | {pred.class_id, pred.mask_id}
    unseen = [i for i in range(pred.vocab_size) if i not in shown]
    assert grad[unseen].abs().max() == 0
    assert all(grad[i].abs().sum() > 0 for i in shown)
    assert pred.mlm_layer.bias.grad[0, 0, 32:64].abs().min() > 0  # the outputs do learn


def test_wrong_kind_of_checkpoint(tmp_path):
    used, _ = mage_shapes()
    torch.save({'model': random_state(used)}, tmp_path / 'mage.pth')
    torch.save({'state_dict': random_state(vqgan_shapes())}, tmp_path / 'vq.ckpt')
    with pytest.raises(ValueError, match='not a VQ tokenizer checkpoint'):
        VQTokenizer(
            base_channels=32, code_dim=16, num_codes=64, checkpoint=str(tmp_path / 'mage.pth'))
    with pytest.raises(ValueError, match='not a MAGE token predictor checkpoint'):
        TokenPredictor(arch=SMALL_MAGE, checkpoint=str(tmp_path / 'vq.ckpt'))
    with pytest.raises(ValueError, match='does not fit'):
        VQTokenizer(
            base_channels=64, code_dim=16, num_codes=64, checkpoint=str(tmp_path / 'vq.ckpt'))


# ------------------------------------------------------------ tokenizer API
@pytest.fixture(scope='module')
def tiny_tokenizer():
    torch.manual_seed(0)
    tok = VQTokenizer(
        base_channels=16,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        code_dim=8,
        num_codes=32,
        norm_groups=4,
        frozen=True)
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
    tok = VQTokenizer(
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        code_dim=8,
        num_codes=16,
        norm_groups=4,
        ema_decay=0.5,
        restart_dead_codes=True)
    before = tok.quantize.embedding.weight.clone()
    losses = tok.loss(torch.rand(4, 3, 16, 16))
    assert set(losses) == {'loss_commit', 'loss_rec'}  # EMA replaces the codebook term
    assert not torch.equal(before, tok.quantize.embedding.weight)
    assert 'quantize.ema_cluster_size' in tok.state_dict()


# ---------------------------------------------------------- predictor API
#: a frozen predictor over 16 ids of 32 codes
TINY_PREDICTOR = dict(
    arch=dict(
        embed_dims=32,
        depth=2,
        num_heads=2,
        decoder_embed_dims=32,
        decoder_depth=1,
        decoder_num_heads=2),
    codebook_size=32,
    num_classes=1,
    class_id=32,
    num_tokens=16,
    frozen=True)


@pytest.fixture(scope='module')
def tiny_predictor():
    torch.manual_seed(0)
    return TokenPredictor(**TINY_PREDICTOR)


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


def test_predictor_nll_is_the_cross_entropy_of_the_true_ids(tiny_predictor):
    torch.manual_seed(0)
    ids = torch.randint(0, tiny_predictor.codebook_size, (3, tiny_predictor.num_tokens))
    images = torch.rand(3, 3, 32, 32)  # not read: the ids stand for the tokenizer's
    with mock.patch.object(tiny_predictor, '_image_ids', lambda inputs: ids):  # no tokenizer
        samples = tiny_predictor.predict(images)
    gen = torch.Generator().manual_seed(0)
    mask = tiny_predictor.mask_ratio.sample_mask(*ids.shape, generator=gen)
    logits = tiny_predictor.logits(ids, mask).float()
    for j, sample in enumerate(samples):
        expected = torch.nn.functional.cross_entropy(
            logits[j][mask[j]], ids[j][mask[j]], reduction='none')
        assert torch.equal(sample['target'], ids[j][mask[j]])
        assert torch.allclose(sample['nll'], expected, atol=1e-5)


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
    from mmaddp.models.diffusion import TruncatedNormalMaskRatio
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


def _logits_with_encoder_on(pred, ids, mask, seen):
    """Reference for ``encoder_drop``: per sample, the encoder runs on the
    class token and the positions in ``seen[j]`` only (a plain loop over
    explicit index lists); every other step as in ``TokenPredictor.logits``."""
    rows = []
    for j in range(ids.shape[0]):
        tokens = torch.where(mask[j], torch.full_like(ids[j], pred.mask_id), ids[j])
        tokens = torch.cat([tokens.new_tensor([pred.class_id]), tokens])
        x = pred.token_emb(tokens[None])
        index = torch.tensor([0] + [p + 1 for p in seen[j]])
        x = x[:, index]
        for blk in pred.blocks:
            x = blk(x)
        x = pred.decoder_embed(pred.norm(x))
        full = x[:, :1].repeat(1, ids.shape[1] + 1, 1)  # masked positions: class vector
        full[:, index] = x
        full[0, 1:][mask[j]] = x[0, 0]
        full = full + pred.decoder_pos_embed_learned
        for blk in pred.decoder_blocks:
            full = blk(full)
        logits = pred.mlm_layer(pred.decoder_norm(full), pred.token_emb.word_embeddings.weight)
        rows.append(logits[0, 1:, :pred.codebook_size])
    return torch.stack(rows)


def test_encoder_drop_hides_masked_positions_from_the_encoder():
    """MAGE's drop: with ``encoder_drop=0.5`` of 16 positions, 8 masked
    positions per sample (fewer where a sample has fewer masked) never reach
    the encoder. In eval mode the dropped ones follow the fixed
    ``drop_order`` and no random number is drawn; the result equals running
    the encoder on the kept positions only, sample by sample."""
    torch.manual_seed(0)
    pred = TokenPredictor(encoder_drop=0.5, **TINY_PREDICTOR)
    full = TokenPredictor(**TINY_PREDICTOR)
    full.load_state_dict(pred.state_dict())  # same weights, every position encoded
    ids = torch.randint(0, 32, (3, 16))
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[0, :12] = True  # 12 masked: 8 dropped, 4 seen as [MASK]
    mask[1, 3:13] = True  # 10 masked
    mask[2, torch.randperm(16)[:9]] = True  # 9 masked
    state = torch.get_rng_state()
    logits = pred.logits(ids, mask)
    assert torch.equal(torch.get_rng_state(), state)  # eval mode: no draw
    seen = []
    for j in range(3):
        masked = mask[j].nonzero()[:, 0].tolist()
        dropped = sorted(masked, key=lambda p: -float(pred.drop_order[p]))[:8]
        seen.append([p for p in range(16) if p not in dropped])
    torch.testing.assert_close(logits, _logits_with_encoder_on(pred, ids, mask, seen))
    assert not torch.allclose(logits, full.logits(ids, mask))  # the drop changes what is seen
    # a sample with only 5 masked: the batch drops 5 each (fixed shapes)
    mask[1] = False
    mask[1, :5] = True
    seen = []
    for j in range(3):
        masked = mask[j].nonzero()[:, 0].tolist()
        dropped = sorted(masked, key=lambda p: -float(pred.drop_order[p]))[:5]
        seen.append([p for p in range(16) if p not in dropped])
    torch.testing.assert_close(
        pred.logits(ids, mask), _logits_with_encoder_on(pred, ids, mask, seen))
    # nothing masked: nothing dropped, the full predictor's result
    none = torch.zeros_like(mask)
    torch.testing.assert_close(pred.logits(ids, none), full.logits(ids, none))
    with pytest.raises(ValueError, match='encoder_drop'):
        TokenPredictor(encoder_drop=1.0, **TINY_PREDICTOR)
