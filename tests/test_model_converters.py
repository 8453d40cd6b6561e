"""tools/model_converters: released files (real key names and shapes, from
tests/release_layouts.py) to mmaddp checkpoints and back, every tensor
compared, and the converted files loading into mmaddp's models."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from test_addp import CODES, WIDTH, L, tiny_addp
from test_tokenizer_predictor import SMALL_MAGE

from mmaddp.models import ADDPViT, TokenPredictor, VQTokenizer
from release_layouts import (addp_checkpoint, addp_unused_shapes, classifier_checkpoint,
                             mage_checkpoint, mage_shapes, random_state, vqgan_shapes)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'model_converters'))
import mmaddp2release  # noqa: E402
import release2mmaddp  # noqa: E402

TINY_VQ = dict(ch=16, mults=(1, 2, 2, 4), nres=1, code=16, codes=CODES, nmid=1)


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _assert_same_tensors(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def _released_addp(tmp_path):
    ckpt = addp_checkpoint(
        dim=WIDTH,
        depth=2,
        grid=4,
        dec_depth=2,
        vocab=CODES + 2,
        patch=8,
        vqgan=vqgan_shapes(**TINY_VQ),
        mage=dict(d=32, depth=1, dd=32, ddepth=1, seq=L + 1))
    path = tmp_path / 'addp-vit-tiny-8.pth'
    torch.save(ckpt, path)
    return path, ckpt['model']


def test_addp_release_round_trip(tmp_path):
    src, release = _released_addp(tmp_path)
    dst, parts = tmp_path / 'addp_mmaddp.pth', tmp_path / 'parts'
    outputs = release2mmaddp.main([str(src), str(dst), '--frozen-parts-dir', str(parts)])
    assert sorted(outputs) == ['addp', 'token_predictor', 'tokenizer']
    converted = _load(dst)
    assert converted['meta']['release_layout'] == 'addp'
    # what the release stores but no part reads, written out independently
    n = L + 1
    mage_unused = set(mage_shapes(32, 1, 32, 1, CODES + 2, n, 8)[1]) | {'token_emb.position_ids'}
    mage_unused |= {'vqgan.' + k for k in vqgan_shapes(**TINY_VQ)}
    expected_dropped = set(addp_unused_shapes(WIDTH, L,
                                              8)) | {'token_predictor.' + k
                                                     for k in mage_unused}
    assert set(converted['meta']['dropped']) == expected_dropped

    # the converted files are what mmaddp's models hold: nothing missing or extra
    model = tiny_addp().eval()
    result = model.load_checkpoint(str(dst))
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same_tensors(converted['state_dict'], model.state_dict())
    assert torch.equal(model.backbone.pre_norm.weight, release['tokenizer_norm.weight'])
    for part, load in (('tokenizer', model.tokenizer), ('token_predictor', model.token_predictor)):
        result = load.load_checkpoint(str(parts / f'{part}.pth'))
        assert result.missing_keys == [] and result.unexpected_keys == [], part
    assert torch.equal(model.tokenizer.quantize.embedding.weight,
                       release['vqgan.quantize.embedding.weight'])

    # and back: the release file less exactly the dropped tensors
    back = tmp_path / 'addp-back.pth'
    mmaddp2release.main([
        str(dst),
        str(back), '--tokenizer',
        str(parts / 'tokenizer.pth'), '--token-predictor',
        str(parts / 'token_predictor.pth')
    ])
    back_state = _load(back)
    assert list(back_state) == ['model']
    _assert_same_tensors(back_state['model'], {
        k: v
        for k, v in release.items() if k not in expected_dropped
    })

    # mmaddp -> release -> mmaddp leaves every tensor as it was
    again = tmp_path / 'addp_again.pth'
    release2mmaddp.main([str(back), str(again), '--frozen-parts-dir', str(tmp_path / 'again')])
    _assert_same_tensors(_load(again)['state_dict'], converted['state_dict'])
    for part in ('tokenizer', 'token_predictor'):
        _assert_same_tensors(
            _load(tmp_path / 'again' / f'{part}.pth')['state_dict'],
            _load(parts / f'{part}.pth')['state_dict'])


def test_trained_addp_runner_checkpoint_to_release_and_back(tmp_path):
    """A checkpoint as mmaddp's runner saves it (meta, state_dict, optimizer
    state) goes to the release layout, which the authors' key names load."""
    torch.manual_seed(1)
    model = tiny_addp()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runner_ckpt = tmp_path / 'iter_10.pth'
    torch.save(dict(meta=dict(iter=10), state_dict=state, message_hub={}), runner_ckpt)
    back = tmp_path / 'addp-vit-tiny-8.pth'
    mmaddp2release.main([str(runner_ckpt), str(back)])
    release = _load(back)['model']
    assert 'tokenizer_norm.weight' in release and 'decoder_pos_mask_embed' in release
    assert not any(k.startswith(('backbone.', 'neck.')) for k in release)
    # the release's encoder names feed ADDPViT's Pretrained init
    encoder = ADDPViT(
        arch=dict(embed_dims=WIDTH, num_layers=2, num_heads=2),
        img_size=32,
        patch_size=8,
        out_type='raw',
        init_cfg=dict(type='Pretrained', checkpoint=str(back)))
    encoder.init_weights()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.eval()(x)[0], model.eval().backbone(x)[0], atol=0, rtol=0)
    again = tmp_path / 'again.pth'
    release2mmaddp.main([str(back), str(again)])
    _assert_same_tensors(_load(again)['state_dict'], state)


def test_mage_release_round_trip(tmp_path):
    release = mage_checkpoint()
    src = tmp_path / 'mage-vitb-1600.pth'
    torch.save({'model': release}, src)
    dst, parts = tmp_path / 'mage_mmaddp.pth', tmp_path / 'parts'
    release2mmaddp.main([str(src), str(dst), '--frozen-parts-dir', str(parts)])
    converted = _load(dst)
    used, unused = mage_shapes()
    assert set(converted['meta']['dropped']) == set(unused) | {'token_emb.position_ids'}
    pred = TokenPredictor(arch=SMALL_MAGE)
    result = pred.load_checkpoint(str(dst))
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same_tensors(converted['state_dict'], {k: release[k] for k in used})
    tokenizer = _load(parts / 'tokenizer.pth')['state_dict']
    _assert_same_tensors(tokenizer, {k[6:]: v for k, v in release.items() if k[:6] == 'vqgan.'})

    back = tmp_path / 'mage-back.pth'
    mmaddp2release.main([str(dst), str(back), '--tokenizer', str(parts / 'tokenizer.pth')])
    keep = {k: v for k, v in release.items() if k not in unused and k != 'token_emb.position_ids'}
    _assert_same_tensors(_load(back)['model'], keep)


def test_vqgan_release_round_trip(tmp_path):
    release = random_state(vqgan_shapes())
    src = tmp_path / 'vqgan_jax_strongaug.ckpt'
    torch.save({'state_dict': release}, src)
    dst = tmp_path / 'vqgan_mmaddp.pth'
    release2mmaddp.main([str(src), str(dst)])
    converted = _load(dst)
    assert converted['meta']['dropped'] == []
    tok = VQTokenizer(base_channels=32, code_dim=16, num_codes=64)
    result = tok.load_checkpoint(str(dst))
    assert result.missing_keys == [] and result.unexpected_keys == []
    back = tmp_path / 'vqgan-back.ckpt'
    mmaddp2release.main([str(dst), str(back)])
    back_state = _load(back)
    assert list(back_state) == ['state_dict']  # VQGAN's own container key
    _assert_same_tensors(back_state['state_dict'], release)


def test_release_classifier_round_trip(tmp_path):
    release = classifier_checkpoint(dim=64, depth=4, grid=4, num_classes=10)['model']
    src = tmp_path / 'addp-vit-nano-finetuned.pth'
    torch.save({'model': release}, src)
    dst = tmp_path / 'cls_mmaddp.pth'
    release2mmaddp.main([str(src), str(dst)])
    state = _load(dst)['state_dict']
    assert torch.equal(state['backbone.pooled_norm.weight'], release['fc_norm.weight'])
    assert torch.equal(state['head.fc.weight'], release['head.weight'])
    backbone = ADDPViT(
        arch='nano', img_size=64, out_type='avg_featmap', pre_norm=False, final_norm=False)
    own = {'backbone.' + k for k in backbone.state_dict()}
    assert {k for k in state if k.startswith('backbone.')} == own
    back = tmp_path / 'cls-back.pth'
    mmaddp2release.main([str(dst), str(back)])
    _assert_same_tensors(_load(back)['model'], release)


def _tool(name, *args):
    return subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'model_converters', f'{name}.py'), *map(str, args)
    ],
                          capture_output=True,
                          text=True)


@pytest.mark.parametrize('case', ['mmaddp_to_mmaddp', 'exists', 'garbage', 'wrong_kind'])
def test_converters_refuse_with_one_line(tmp_path, case):
    torch.save({'state_dict': tiny_addp().state_dict(), 'meta': {}}, tmp_path / 'iter_1.pth')
    existing = tmp_path / 'existing.pth'
    existing.write_bytes(b'keep me')
    if case == 'mmaddp_to_mmaddp':
        proc = _tool('release2mmaddp', tmp_path / 'iter_1.pth', tmp_path / 'out.pth')
        expect = 'is already an mmaddp ADDP checkpoint'
    elif case == 'exists':
        src, _ = _released_addp(tmp_path)
        proc = _tool('release2mmaddp', src, existing)
        expect = 'exists; pass --overwrite'
    elif case == 'garbage':
        (tmp_path / 'bad.pth').write_bytes(b'\x00not a checkpoint')
        proc = _tool('mmaddp2release', tmp_path / 'bad.pth', tmp_path / 'out.pth')
        expect = 'is not a readable torch file'
    else:  # an mmpretrain VisionTransformer
        torch.save({'state_dict': {'layers.0.ln1.weight': torch.ones(4)}}, tmp_path / 'vit.pth')
        proc = _tool('mmaddp2release', tmp_path / 'vit.pth', tmp_path / 'out.pth')
        expect = 'is not an mmaddp ADDP, token predictor, tokenizer or ADDPViT classifier'
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert expect in last and 'Traceback' not in proc.stderr, proc.stderr
    assert existing.read_bytes() == b'keep me'
    assert not (tmp_path / 'out.pth').exists()
