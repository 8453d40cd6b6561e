"""Precision and kernels chosen from what the CPU reports: bf16 autocast
(CPUBf16OptimWrapper, tools/train.py --amp) and the attention path."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import OptimWrapper

import mmaddp.engine.optimizers.cpu_bf16_optim_wrapper as wrapper_mod
import mmaddp.models.layers.attention as attention_mod
from mmaddp.engine.optimizers import CPUBf16OptimWrapper, cpu_has_fast_bf16


def _wrapper(enabled='auto'):
    model = torch.nn.Linear(8, 4)
    return model, CPUBf16OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), enabled=enabled)


def test_bf16_autocast_follows_the_cpu_flags(monkeypatch):
    x = torch.randn(2, 8)
    monkeypatch.setattr(wrapper_mod, 'cpu_flags', lambda: {'avx2', 'avx512f', 'avx512_bf16'})
    model, wrapper = _wrapper()
    assert wrapper.bf16_enabled
    with wrapper.optim_context(model):
        assert model(x).dtype == torch.bfloat16
    loss = model(x).sum()  # outside the context: fp32
    assert loss.dtype == torch.float32
    wrapper.update_params(loss)  # a plain OptimWrapper step, no loss scaler
    assert isinstance(wrapper, OptimWrapper)

    monkeypatch.setattr(wrapper_mod, 'cpu_flags', lambda: {'avx2', 'avx512f'})
    model, wrapper = _wrapper()
    assert not wrapper.bf16_enabled
    with wrapper.optim_context(model):
        assert model(x).dtype == torch.float32
    with pytest.raises(RuntimeError, match='avx512_bf16'):
        _wrapper(enabled=True)
    with pytest.raises(ValueError, match='enabled'):
        _wrapper(enabled='yes')


def test_the_flags_come_from_proc_cpuinfo():
    flags = wrapper_mod.cpu_flags()
    with open('/proc/cpuinfo') as f:
        line = next(line for line in f if line.startswith(('flags', 'Features')))
    assert flags == set(line.split(':', 1)[1].split())
    assert cpu_has_fast_bf16() == bool(flags & {'avx512_bf16', 'amx_bf16'})


def test_train_amp_on_cpu(monkeypatch):
    import importlib.util
    import os.path as osp

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(ROOT, 'tools', 'train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(
        dict(
            optim_wrapper=dict(
                type='AmpOptimWrapper', dtype='bfloat16', optimizer=dict(type='AdamW', lr=1e-3))))
    monkeypatch.setattr(train, 'cpu_has_fast_bf16', lambda: True)
    train.select_amp_wrapper(cfg)
    assert cfg.optim_wrapper.type == 'CPUBf16OptimWrapper' and cfg.optim_wrapper.enabled is True
    assert 'dtype' not in cfg.optim_wrapper
    monkeypatch.setattr(train, 'cpu_has_fast_bf16', lambda: False)
    with pytest.raises(RuntimeError, match='avx512_bf16 or amx_bf16'):
        train.select_amp_wrapper(Config(dict(optim_wrapper=dict(type='OptimWrapper'))))


@pytest.mark.parametrize('head_dim', [16, 32, 64])
def test_explicit_attention_equals_sdpa(head_dim):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, head_dim, generator=g) for _ in range(3))
    mask = torch.randn(2, 3, 17, 17, generator=g)
    expect = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(
        attention_mod.attention(q, k, v, attn_mask=mask), expect, atol=1e-5, rtol=1e-5)
    # narrow heads on CPU take the explicit path, ViT-B's 64 keep SDPA
    assert attention_mod.use_explicit_attention(q.device, head_dim) == (head_dim < 64)
    assert not attention_mod.use_explicit_attention(torch.device('cuda'), 16)


def test_backbone_output_does_not_depend_on_the_kernel():
    from mmengine.registry import init_default_scope

    from mmaddp.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    vit = MODELS.build(
        dict(type='ADDPViT', arch='nano', img_size=32, patch_size=4, out_type='raw')).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        explicit = vit(x)[-1]
        assert not vit.blocks[0].attn.fused_attn  # 16-wide heads on CPU
        attention_mod.MIN_CPU_SDPA_HEAD_DIM, old = 0, attention_mod.MIN_CPU_SDPA_HEAD_DIM
        try:
            fused = vit(x)[-1]
            assert vit.blocks[0].attn.fused_attn
        finally:
            attention_mod.MIN_CPU_SDPA_HEAD_DIM = old
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)


def _frozen_dtypes(model):
    tok, pred = model.tokenizer, model.token_predictor
    return (tok.encoder.conv_in.weight.dtype, tok.decoder.conv_out.weight.dtype,
            tok.quantize.embedding.weight.dtype, pred.blocks[0].attn.qkv.weight.dtype)


def test_frozen_precision_bf16_keeps_ids_and_codebook_fp32_and_the_loss_close(monkeypatch):
    from test_addp import tiny_addp
    default, bf16 = tiny_addp(), tiny_addp(frozen_precision='bf16')
    assert _frozen_dtypes(default) == (torch.float32, ) * 4
    # encoder fp32 (exact ids), decoder and predictor bf16, codebook fp32
    assert _frozen_dtypes(bf16) == (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16)
    assert bf16.tokenizer.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    (ids_a, q_a, a), (ids_b, x_b, q_b, b) = _fp32_and_under_bf16_autocast(default, bf16)
    assert torch.equal(ids_a, ids_b) and x_b.dtype == torch.bfloat16
    assert (q_a - q_b).abs().max() < 0.05
    assert torch.isfinite(b) and abs(float(a) - float(b)) < 0.02 * float(a)
    # 'auto' follows the CPU flags, decided again when the model moves
    monkeypatch.setattr(wrapper_mod, 'cpu_has_fast_bf16', lambda: True)
    auto = tiny_addp(frozen_precision='auto')
    assert _frozen_dtypes(auto)[1] == torch.bfloat16
    monkeypatch.setattr(wrapper_mod, 'cpu_has_fast_bf16', lambda: False)
    auto.to('cpu')
    assert _frozen_dtypes(auto) == (torch.float32, ) * 4
    with pytest.raises(ValueError, match='frozen_precision must be one of'):
        tiny_addp(frozen_precision='fp16')


def test_frozen_precision_bf16_all_holds_every_frozen_part_in_bf16():
    """``'bf16_all'``: the encoder in bf16 too, the codebook fp32; under a
    bf16 autocast no frozen weight is cast (``'autocast'`` casts them at
    every call); the ids and the loss stay close to the fp32 ones."""
    from test_addp import tiny_addp
    default, fast = tiny_addp(), tiny_addp(frozen_precision='bf16_all')
    assert _frozen_dtypes(fast) == (torch.bfloat16, torch.bfloat16, torch.float32, torch.bfloat16)
    tok = fast.tokenizer
    assert tok.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    (ids_a, _, a), (ids_b, x_b, _, b) = _fp32_and_under_bf16_autocast(default, fast)
    assert x_b.dtype == torch.bfloat16 and ids_b.dtype == ids_a.dtype
    # random tiny weights put many codes near-tied; a trained tokenizer's
    # bf16 encoder moves ~2 % (test below)
    assert (ids_a == ids_b).float().mean() >= 0.7
    assert torch.isfinite(b) and abs(float(a) - float(b)) < 0.02 * float(a)
    assert _frozen_weight_casts(fast) == 0
    assert _frozen_weight_casts(tiny_addp()) > 20


def _inputs(model):
    """The same images and masks for every call (seeded)."""
    from test_addp import L
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mask_t, mask_next = model.mask_schedule.masks_for(
        4, L, 10, 14, generator=torch.Generator().manual_seed(2))
    return images, mask_t, mask_next


def _fp32_and_under_bf16_autocast(reference, model):
    """``(ids, q, loss)`` of ``reference`` in fp32 and ``(ids, x_t, q,
    loss)`` of ``model`` under a bf16 autocast (as under
    ``CPUBf16OptimWrapper``), on the same images and masks."""
    inputs = _inputs(reference)
    reference.eval(), model.eval()
    with torch.no_grad():
        ids_a, _, q_a = reference.corrupt(*inputs)
        a = reference.denoising_loss(*inputs)
        with torch.autocast('cpu', torch.bfloat16):
            ids_b, x_b, q_b = model.corrupt(*inputs)
            b = model.denoising_loss(*inputs)
    return (ids_a, q_a, a), (ids_b, x_b, q_b, b)


def _frozen_weight_casts(model):
    """How many times the forward process under a bf16 autocast copies a
    frozen part's parameter into another dtype."""
    from torch.utils._python_dispatch import TorchDispatchMode
    frozen = {
        p.data_ptr()
        for part in (model.tokenizer, model.token_predictor)
        for p in part.parameters()
    }
    casts = []

    class CountCasts(TorchDispatchMode):

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in frozen:
                casts.append(func)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16), CountCasts():
        model.corrupt(*_inputs(model))
    return len(casts)


def test_the_fast_tokenizer_formats_keep_the_fp32_code_ids(trained_tokenizer):
    """On the bundled val images, the channels-last fp32 encoder (what
    ``frozen_precision='bf16'`` uses) picks the fp32 path's code at every
    position, the bf16 decoder reconstructs within bf16 rounding; a bf16
    encoder (autocast) moves some ids, which is why it is not used."""
    import glob
    import os.path as osp

    import numpy as np
    from PIL import Image

    from mmaddp.registry import MODELS
    from conftest import TOKENIZER_CFG
    checkpoint, data_root = trained_tokenizer
    cfg = dict(Config.fromfile(TOKENIZER_CFG).model)
    cfg.pop('data_preprocessor', None)
    tok = MODELS.build(dict(cfg, frozen=True, checkpoint=str(checkpoint)))
    files = sorted(glob.glob(osp.join(data_root, 'val', '*', '*.png')))
    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(f).convert('RGB'))).permute(2, 0, 1)
         for f in files]).float() / 255
    with torch.no_grad():
        ids32, vectors32 = tok.encode(images)
        recon32 = tok.decode(vectors32)
        with torch.autocast('cpu', torch.bfloat16):
            ids_autocast, _ = tok.encode(images)
        tok.set_inference_format(torch.bfloat16, channels_last=True, encoder_dtype=torch.float32)
        ids_fast, vectors = tok.encode(images)
        recon = tok.decode(vectors)
    assert len(files) == 500 and recon.dtype == torch.bfloat16
    assert (ids_fast == ids32).float().mean() >= 0.995
    assert (recon.float() - recon32).abs().mean() < 0.01
    assert (ids_autocast == ids32).float().mean() < 1.0  # bf16 features move some codes


def test_cpu_bf16_wrapper_trains_the_tiny_addp_config(monkeypatch):
    """The demo ADDP config's optimizer wrapper with bf16 autocast on
    (emulated where the CPU lacks bf16: slower, the same arithmetic) fits a
    fixed batch: every loss finite, the last ones well below the first."""
    from mmengine.optim import build_optim_wrapper

    from mmaddp.registry import MODELS
    from conftest import ROOT
    monkeypatch.setattr(wrapper_mod, 'cpu_has_fast_bf16', lambda: True)
    cfg = Config.fromfile(f'{ROOT}/configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py')
    cfg.model.tokenizer.checkpoint = cfg.model.token_predictor.checkpoint = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    cfg.optim_wrapper.enabled = True
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, CPUBf16OptimWrapper) and wrapper.bf16_enabled
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=gen)
    mask_t, mask_next = model.mask_schedule.masks_for(8, 64, 20, 23, generator=gen)
    losses = []
    for _ in range(20):
        with wrapper.optim_context(model):
            loss = model.denoising_loss(images, mask_t, mask_next)
        assert loss.dtype == torch.float32  # the loss itself is reduced in fp32
        wrapper.update_params(loss)
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses
