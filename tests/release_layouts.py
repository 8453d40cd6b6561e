"""Key -> shape of the authors' released files, written from
``../shared/ADDP_SPEC.md`` and the release's module definitions (not from
mmaddp's modules), with random values: the files a user downloads, at small
widths.

* ``vqgan_jax_strongaug.ckpt`` (``state_dict``),
* ``mage-vit{b,l}-1600.pth`` (``model``): MAGE keeps the unused MAE parts
  (pixel ``patch_embed``, sin-cos tables, ``decoder_pred`` to p*p*3 pixels,
  ``cls_token`` / ``mask_token``), BERT's ``token_emb.position_ids`` buffer,
  a ``vqgan.*`` copy of the tokenizer and the MLM bias as 1 x 1 x vocab,
* ``addp-vit-{base,large}-16.pth`` (``model``): encoder + decoder, unused
  tables, ``vqgan.*`` and ``token_predictor.*`` (a whole MAGE file) copies,
* a classifier fine-tuned by the release (``model``): encoder without the
  pre-block and final norms, ``fc_norm``, ``head``.
"""
from typing import Dict, Tuple

import torch

Shapes = Dict[str, Tuple[int, ...]]


def _resblock(prefix: str, cin: int, cout: int) -> Shapes:
    keys = {
        f'{prefix}.norm1.weight': (cin, ),
        f'{prefix}.norm1.bias': (cin, ),
        f'{prefix}.conv1.weight': (cout, cin, 3, 3),
        f'{prefix}.norm2.weight': (cout, ),
        f'{prefix}.norm2.bias': (cout, ),
        f'{prefix}.conv2.weight': (cout, cout, 3, 3)
    }
    if cin != cout:  # 1x1 on the branch output: out -> out
        keys[f'{prefix}.nin_shortcut.weight'] = (cout, cout, 1, 1)
    return keys


def vqgan_shapes(ch=32, mults=(1, 1, 2, 2, 4), nres=2, code=16, codes=64, nmid=2) -> Shapes:
    """Key -> shape of vqgan_jax_strongaug.ckpt (release: ch 128, code 256,
    1024 codes, 2 middle blocks; mmaddp's small tokenizers have ``nres``)."""
    s = {'encoder.conv_in.weight': (ch, 3, 3, 3)}
    prev = ch
    for i, m in enumerate(mults):
        for j in range(nres):
            s.update(_resblock(f'encoder.down.{i}.block.{j}', prev, ch * m))
            prev = ch * m
    for j in range(1, nmid + 1):
        s.update(_resblock(f'encoder.mid.block_{j}', prev, prev))
    s.update({
        'encoder.norm_out.weight': (prev, ),
        'encoder.norm_out.bias': (prev, ),
        'encoder.conv_out.weight': (code, prev, 1, 1),
        'encoder.conv_out.bias': (code, ),
        'decoder.conv_in.weight': (ch * mults[-1], code, 3, 3),
        'decoder.conv_in.bias': (ch * mults[-1], )
    })
    prev = ch * mults[-1]
    for j in range(1, nmid + 1):
        s.update(_resblock(f'decoder.mid.block_{j}', prev, prev))
    for i in reversed(range(len(mults))):
        for j in range(nres):
            s.update(_resblock(f'decoder.up.{i}.block.{j}', prev, ch * mults[i]))
            prev = ch * mults[i]
        if i > 0:
            s[f'decoder.up.{i}.upsample.conv.weight'] = (prev, prev, 3, 3)
            s[f'decoder.up.{i}.upsample.conv.bias'] = (prev, )
    s.update({
        'decoder.norm_out.weight': (ch, ),
        'decoder.norm_out.bias': (ch, ),
        'decoder.conv_out.weight': (3, ch, 3, 3),
        'decoder.conv_out.bias': (3, ),
        'quantize.embedding.weight': (codes, code)
    })
    return s


def timm_block_shapes(prefix: str, d: int) -> Shapes:
    return {
        f'{prefix}.norm1.weight': (d, ),
        f'{prefix}.norm1.bias': (d, ),
        f'{prefix}.attn.qkv.weight': (3 * d, d),
        f'{prefix}.attn.qkv.bias': (3 * d, ),
        f'{prefix}.attn.proj.weight': (d, d),
        f'{prefix}.attn.proj.bias': (d, ),
        f'{prefix}.norm2.weight': (d, ),
        f'{prefix}.norm2.bias': (d, ),
        f'{prefix}.mlp.fc1.weight': (4 * d, d),
        f'{prefix}.mlp.fc1.bias': (4 * d, ),
        f'{prefix}.mlp.fc2.weight': (d, 4 * d),
        f'{prefix}.mlp.fc2.bias': (d, )
    }


def mlm_shapes(prefix: str, feat: int, word: int, vocab: int) -> Shapes:
    return {
        f'{prefix}.fc.weight': (word, feat),
        f'{prefix}.fc.bias': (word, ),
        f'{prefix}.ln.weight': (word, ),
        f'{prefix}.ln.bias': (word, ),
        f'{prefix}.bias': (1, 1, vocab)
    }  # the release's MlmLayer bias


def mage_shapes(d=32,
                depth=2,
                dd=48,
                ddepth=2,
                vocab=2025,
                seq=257,
                patch=16) -> Tuple[Shapes, Shapes]:
    """(used, unused) key -> shape of mage-vit*-1600.pth, without the vqgan
    copy and the int64 ``token_emb.position_ids`` (see
    :func:`mage_checkpoint`). ViT-B: 768, 12, 768, 8."""
    s = {
        'token_emb.word_embeddings.weight': (vocab, d),
        'token_emb.position_embeddings.weight': (seq, d),
        'token_emb.LayerNorm.weight': (d, ),
        'token_emb.LayerNorm.bias': (d, ),
        'norm.weight': (d, ),
        'norm.bias': (d, ),
        'decoder_embed.weight': (dd, d),
        'decoder_embed.bias': (dd, ),
        'decoder_pos_embed_learned': (1, seq, dd),
        'decoder_norm.weight': (dd, ),
        'decoder_norm.bias': (dd, ),
        **mlm_shapes('mlm_layer', dd, d, vocab)
    }
    for i in range(depth):
        s.update(timm_block_shapes(f'blocks.{i}', d))
    for i in range(ddepth):
        s.update(timm_block_shapes(f'decoder_blocks.{i}', dd))
    unused = {
        'patch_embed.proj.weight': (d, 3, patch, patch),
        'patch_embed.proj.bias': (d, ),
        'cls_token': (1, 1, d),
        'pos_embed': (1, seq, d),
        'mask_token': (1, 1, dd),
        'decoder_pos_embed': (1, seq, dd),
        'decoder_pred.weight': (patch * patch * 3, dd),
        'decoder_pred.bias': (patch * patch * 3, )
    }
    return s, unused


def random_state(shapes: Shapes, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*v, generator=g) * 0.05 for k, v in shapes.items()}


def mage_checkpoint(d=32,
                    depth=2,
                    dd=48,
                    ddepth=2,
                    vocab=2025,
                    seq=257,
                    patch=16,
                    vqgan=None,
                    seed=0) -> Dict[str, torch.Tensor]:
    """A whole MAGE ``model`` dict: used and unused keys, position_ids and a
    ``vqgan.*`` copy (``vqgan``: shapes, default a small VQGAN)."""
    used, unused = mage_shapes(d, depth, dd, ddepth, vocab, seq, patch)
    state = random_state({**used, **unused}, seed)
    state['token_emb.position_ids'] = torch.arange(seq).expand(1, -1)
    for k, v in random_state(vqgan or vqgan_shapes(), seed + 1).items():
        state['vqgan.' + k] = v
    return state


def addp_encoder_shapes(dim: int, depth: int, num_patches: int, patch=16) -> Shapes:
    s = {
        'patch_embed.proj.weight': (dim, 3, patch, patch),
        'patch_embed.proj.bias': (dim, ),
        'cls_token': (1, 1, dim),
        'pos_embed': (1, 1 + num_patches, dim),
        'tokenizer_norm.weight': (dim, ),
        'tokenizer_norm.bias': (dim, ),
        'norm.weight': (dim, ),
        'norm.bias': (dim, )
    }
    for i in range(depth):
        s.update(timm_block_shapes(f'blocks.{i}', dim))
    return s


def addp_decoder_shapes(dim: int, depth: int, num_patches: int, vocab: int) -> Shapes:
    n = 1 + num_patches
    s = {
        'decoder_embed.weight': (dim, dim),
        'decoder_embed.bias': (dim, ),
        'mask_token': (1, 1, dim),
        'decoder_pos_embed_learned': (1, n, dim),
        'decoder_pos_mask_embed': (1, n, dim),
        'decoder_pos_token_embed': (1, n, dim),
        'decoder_norm.weight': (dim, ),
        'decoder_norm.bias': (dim, ),
        'token_emb.weight': (vocab, dim),
        **mlm_shapes('mlm_layer', dim, dim, vocab)
    }
    for i in range(depth):
        s.update(timm_block_shapes(f'decoder_blocks.{i}', dim))
    return s


def addp_unused_shapes(dim: int, num_patches: int, patch=16) -> Shapes:
    n = 1 + num_patches
    return {
        'decoder_pos_embed': (1, n, dim),
        'pos_token_embed': (1, n, dim),
        'pos_mask_embed': (1, n, dim),
        'decoder_pred.weight': (patch * patch * 3, dim),
        'decoder_pred.bias': (patch * patch * 3, )
    }


def addp_checkpoint(dim=64,
                    depth=4,
                    grid=4,
                    dec_depth=2,
                    vocab=2025,
                    patch=16,
                    seed=0,
                    vqgan=None,
                    mage=None) -> dict:
    """A file in the released addp-vit-*-16.pth layout, random weights.

    ``vqgan``: shapes of the tokenizer copy (default a small VQGAN); ``mage``:
    :func:`mage_checkpoint` arguments of the token-predictor copy (default a
    small MAGE with the same vocabulary and grid).
    """
    n = grid * grid
    shapes = {
        **addp_encoder_shapes(dim, depth, n, patch),
        **addp_decoder_shapes(dim, dec_depth, n, vocab),
        **addp_unused_shapes(dim, n, patch)
    }
    model = random_state(shapes, seed)
    for k, v in random_state(vqgan or vqgan_shapes(), seed + 1).items():
        model['vqgan.' + k] = v
    mage = dict(
        dict(d=32, depth=1, dd=32, ddepth=1, vocab=vocab, seq=n + 1, patch=patch), **(mage or {}))
    for k, v in mage_checkpoint(vqgan=vqgan, seed=seed + 2, **mage).items():
        model['token_predictor.' + k] = v
    return {'model': model}


def classifier_checkpoint(dim=64, depth=4, grid=4, num_classes=10, patch=16, seed=0) -> dict:
    """A classifier fine-tuned by the release's code (MAE-style ViT with
    global pooling: no ``tokenizer_norm``, no ``norm``; ``fc_norm``, ``head``)."""
    shapes = {
        k: v
        for k, v in addp_encoder_shapes(dim, depth, grid * grid, patch).items()
        if not k.startswith(('tokenizer_norm.', 'norm.'))
    }
    shapes.update({
        'fc_norm.weight': (dim, ),
        'fc_norm.bias': (dim, ),
        'head.weight': (num_classes, dim),
        'head.bias': (num_classes, )
    })
    state = random_state(shapes, seed)
    state['fc_norm.weight'] = state['fc_norm.weight'] + 1  # a trained LayerNorm, not 1 / 0
    return {'model': state}
