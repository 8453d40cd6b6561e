"""The shared pieces the parts are built from: one checkpoint reading path,
the sampler's contract, the frozen-part holder, the attention switch and
mmpretrain's arch keys."""
import pytest
import torch
import torch.nn as nn

from mmaddp.checkpoint import filter_state_dict, recognise_layout, unwrap_state_dict
from mmaddp.models.backbones import ADDPViT
from mmaddp.models.diffusion import eval_mode, make_generators, sample_ids
from mmaddp.models.layers import FrozenPartsMixin, explicit_attention
from release_layouts import (addp_checkpoint, classifier_checkpoint, mage_checkpoint, random_state,
                             vqgan_shapes)


def _layouts():
    addp = addp_checkpoint()['model']
    vit = ADDPViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2), img_size=32, patch_size=8)
    return dict(
        addp=addp,
        token_predictor=mage_checkpoint(),
        tokenizer=random_state(vqgan_shapes()),
        release_classifier=classifier_checkpoint()['model'],
        mmaddp_addp={
            'backbone.' + k: v
            for k, v in vit.state_dict().items()
        } | {'neck.decoder_embed.weight': torch.zeros(4, 32)},
        encoder={
            'backbone.' + k: v
            for k, v in vit.state_dict().items()
        } | {'head.fc.weight': torch.zeros(2, 32)},
        mmpretrain_vit={
            'backbone.layers.0.ln1.weight': torch.ones(32),
            'backbone.patch_embed.projection.weight': torch.zeros(32, 3, 8, 8)
        })


@pytest.mark.parametrize('name', [
    'addp', 'token_predictor', 'tokenizer', 'release_classifier', 'mmaddp_addp', 'encoder',
    'mmpretrain_vit'
])
def test_every_layout_is_recognised(name):
    expected = dict(mmaddp_addp='addp').get(name, name)
    assert recognise_layout(_layouts()[name]) == expected


def test_a_mage_file_is_not_taken_for_addp():
    # MAGE keeps MAE's pixel patch_embed and decoder_embed beside its token table
    state = mage_checkpoint()
    assert 'patch_embed.proj.weight' in state and 'decoder_embed.weight' in state
    assert recognise_layout(state) == 'token_predictor'


def test_unwrap_takes_the_runner_state_then_the_release_model_and_drops_ddp_prefixes():
    inner = {'module.blocks.0.w': torch.zeros(1)}
    assert list(unwrap_state_dict({'state_dict': inner, 'meta': {}})) == ['blocks.0.w']
    assert list(unwrap_state_dict({'model': {'a': torch.zeros(1)}, 'epoch': 3})) == ['a']
    with pytest.raises(ValueError, match='expected a dict of tensors, got list'):
        unwrap_state_dict([1, 2])


@pytest.mark.parametrize(
    'target, layout, message',
    [('tokenizer', 'release_classifier',
      'is not a VQ tokenizer checkpoint .VQGAN.: it is a classifier fine-tuned by the ADDP'),
     ('encoder', 'tokenizer', 'is not a checkpoint with ADDP encoder weights: it is a VQ '
      'tokenizer'),
     ('token_predictor', 'mmpretrain_vit', 'it is an mmpretrain VisionTransformer checkpoint'),
     ('addp', 'token_predictor', 'is not an ADDP checkpoint: it is a MAGE token predictor')])
def test_a_file_of_another_kind_is_refused_naming_both_kinds(target, layout, message):
    with pytest.raises(ValueError, match=message):
        filter_state_dict(_layouts()[layout], target, 'Checkpoint x.pth')


def test_the_filters_map_the_release_names():
    addp = filter_state_dict(_layouts()['addp'], 'addp')
    assert 'backbone.pre_norm.weight' in addp and 'neck.decoder_embed.weight' in addp
    assert 'tokenizer.encoder.conv_in.weight' in addp  # the vqgan.* copy
    assert not any(k.startswith(('decoder_pred.', 'vqgan.')) for k in addp)
    encoder = filter_state_dict(_layouts()['release_classifier'], 'encoder')
    assert 'pooled_norm.weight' in encoder and not any(k.startswith('head') for k in encoder)
    predictor = filter_state_dict(_layouts()['addp'], 'token_predictor')
    assert 'token_emb.word_embeddings.weight' in predictor
    # an ADDP file without a tokenizer copy cannot serve as the tokenizer
    bare = {k: v for k, v in _layouts()['addp'].items() if not k.startswith('vqgan.')}
    with pytest.raises(ValueError, match='not a VQ tokenizer'):
        filter_state_dict(bare, 'tokenizer')


def test_eval_mode_gives_each_module_its_mode_back_also_on_error():
    a, b = nn.Linear(2, 2).train(), nn.Linear(2, 2).eval()
    with pytest.raises(RuntimeError):
        with eval_mode(a, b):
            assert not a.training and not b.training
            raise RuntimeError('boom')
    assert a.training and not b.training


def test_the_sampler_takes_generators_only():

    def predict(ids, masked):
        return torch.full((*ids.shape, 3), 1 / 3)

    with pytest.raises(TypeError, match='make_generators'):
        sample_ids(predict, 2, 4, 2, 0, 'cpu')
    ids = sample_ids(predict, 2, 4, 2, make_generators(2, 'cpu', seeds=[1, 2]), 'cpu')
    assert ids.shape == (2, 4) and int(ids.max()) < 3


class _Holder(FrozenPartsMixin, nn.Module):

    def __init__(self):
        super().__init__()
        self.own = nn.Linear(2, 2)
        self.hold_frozen(part=nn.Linear(2, 2).train())


def test_frozen_parts_stay_out_of_the_tree_follow_moves_and_stay_in_eval():
    model = _Holder()
    assert set(model.state_dict()) == {'own.weight', 'own.bias'}
    assert len(list(model.parameters())) == 2
    part = model.frozen_part('part')
    assert not part.training and not any(p.requires_grad for p in part.parameters())
    model.train()
    assert model.own.training and not part.training
    model.to(torch.float64)
    assert part.weight.dtype == torch.float64


def test_explicit_attention_switch_reaches_wide_heads():
    vit = ADDPViT(
        arch=dict(embed_dims=128, num_layers=1, num_heads=2),
        img_size=16,
        patch_size=8,
        out_type='raw').eval()  # 64-wide heads: SDPA on CPU
    x = torch.randn(1, 3, 16, 16)
    fused = vit(x)[-1]
    assert vit.blocks[0].attn.fused_attn
    with explicit_attention():
        plain = vit(x)[-1]
        assert not vit.blocks[0].attn.fused_attn
    vit(x)
    assert vit.blocks[0].attn.fused_attn
    torch.testing.assert_close(plain, fused, atol=1e-5, rtol=1e-5)


def test_mmpretrain_arch_keys_are_accepted():
    vit = ADDPViT(
        arch=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=96),
        img_size=16,
        patch_size=8)
    assert vit.blocks[0].mlp.fc1.out_features == 96
    with pytest.raises(ValueError, match='not both'):
        ADDPViT(
            arch=dict(
                embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=96, mlp_ratio=3.0))
