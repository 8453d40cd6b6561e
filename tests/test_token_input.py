"""ADDPViT reading the frozen tokenizer's code ids (pixel-vs-token ablation)."""
import pytest
import torch

from mmaddp.models import ADDPViT
from mmaddp.models.tokenizers import VQTokenizer

TOKENIZER = dict(
    type='VQTokenizer',
    base_channels=8,
    channel_mults=(1, 2, 2, 2),
    num_res_blocks=1,
    code_dim=8,
    num_codes=16,
    norm_groups=4)
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@pytest.fixture
def tokenizer_file(tmp_path):
    torch.manual_seed(0)
    tok = VQTokenizer(**{k: v for k, v in TOKENIZER.items() if k != 'type'})
    path = tmp_path / 'tokenizer.pth'
    torch.save(dict(state_dict=tok.state_dict()), path)
    return str(path), tok.eval()


def make(tokenizer_path, **kwargs):
    model = ADDPViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=32,
        patch_size=8,
        out_type='raw',
        token_input=dict(tokenizer=dict(TOKENIZER, checkpoint=tokenizer_path)),
        **kwargs)
    model.init_weights()
    return model


def test_reads_code_ids_not_pixels(tokenizer_file):
    path, tok = tokenizer_file
    model = make(path).eval()
    pixels = torch.rand(2, 3, 32, 32)
    normalised = (pixels * 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        ids, _ = tok.encode(pixels)
        out = model(normalised)[0]
        # reference: embedded ids + class token, positions, pre-norm, blocks, norm
        x = model.patch_embed.embedding(ids.flatten(1))
        x = torch.cat([model.cls_token.expand(2, -1, -1), x], 1) + model.pos_embed
        x = model.pre_norm(x)
        for block in model.blocks:
            x = block(x)
        ref = model.norm(x)
    assert ids.shape == (2, 4, 4)
    torch.testing.assert_close(model.patch_embed.code_ids(normalised), ids)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # pixels that quantise to the same ids give identical features
    other = ids.clone()
    assert torch.equal(model.patch_embed.code_ids(normalised), other)


def test_tokenizer_is_frozen_and_outside_the_state(tokenizer_file):
    path, _ = tokenizer_file
    model = make(path).train()
    names = [n for n, _ in model.named_parameters()]
    assert not any('tokenizer' in n or 'encoder.' in n for n in names)
    assert 'patch_embed.embedding.weight' in names
    assert not any(k.startswith('patch_embed.proj') for k in model.state_dict())
    assert not model.patch_embed.tokenizer.training
    before = {k: v.clone() for k, v in model.patch_embed.tokenizer.state_dict().items()}
    loss = model(torch.randn(2, 3, 32, 32))[0].pow(2).mean()
    loss.backward()
    assert model.patch_embed.embedding.weight.grad is not None
    assert all(p.grad is None for p in model.patch_embed.tokenizer.parameters())
    after = model.patch_embed.tokenizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # moving the model moves the tokenizer held outside the module tree
    model.to(torch.float64)
    assert next(model.patch_embed.tokenizer.parameters()).dtype == torch.float64


def test_patch_size_must_match_tokenizer(tokenizer_file):
    path, _ = tokenizer_file
    with pytest.raises(ValueError, match='downsamples by 8.*patch size is 16'):
        ADDPViT(
            arch=dict(embed_dims=32, num_layers=2, num_heads=2),
            img_size=32,
            patch_size=16,
            token_input=dict(tokenizer=dict(TOKENIZER, checkpoint=path)))
    with pytest.raises(ValueError, match='tokenizer config'):
        ADDPViT(
            arch=dict(embed_dims=32, num_layers=2, num_heads=2),
            img_size=32,
            patch_size=8,
            token_input=dict(tokenizer=None))


def test_fine_tuned_code_id_encoder_loads_into_another_one(tokenizer_file, tmp_path):
    """A token-input run's checkpoint (e.g. classification) starts another
    token-input model (segmentation) with its code embedding and blocks; a
    pixel-input model refuses it by name."""
    path, _ = tokenizer_file
    torch.manual_seed(1)
    source = make(path)
    with torch.no_grad():
        source.patch_embed.embedding.weight.normal_()
    ckpt = tmp_path / 'cls_token.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in source.state_dict().items()}), ckpt)
    target = ADDPViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=64,
        patch_size=8,
        out_type='featmap',
        token_input=dict(tokenizer=dict(TOKENIZER, checkpoint=path)),
        init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    target.init_weights()
    assert torch.equal(target.patch_embed.embedding.weight, source.patch_embed.embedding.weight)
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert target.pos_embed.shape[1] == 1 + 8 * 8  # resized from 4 x 4
    pixels = ADDPViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=32,
        patch_size=8,
        init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    with pytest.raises(ValueError, match='reads tokenizer code ids.*set token_input'):
        pixels.init_weights()
