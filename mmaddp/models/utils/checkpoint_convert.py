"""Read ADDP checkpoints (released or mmaddp's) into ``ADDPViT`` keys."""
from typing import Dict, Optional, Tuple

import torch
from mmengine.logging import MMLogger
from mmpretrain.models.utils import resize_pos_embed

from mmaddp.utils.checkpoint import load_checkpoint_file

# Keys of the released ADDP file (and of mmaddp's models) that belong to the
# decoder or to the frozen parts (tokenizer, token predictor): not the encoder.
NON_ENCODER_PREFIXES = (
    'decoder_', 'mask_token', 'token_emb', 'mlm_layer', 'vqgan.', 'token_predictor.',
    'pos_token_embed', 'pos_mask_embed', 'tokenizer.', 'decoder.', 'head.', 'neck.',
    'data_preprocessor.')
# The released addp-vit-*-16.pth: which top-level keys belong to which part.
RELEASE_ENCODER_PREFIXES = ('patch_embed.', 'cls_token', 'pos_embed', 'tokenizer_norm.',
                            'blocks.', 'norm.')
RELEASE_DECODER_PREFIXES = ('decoder_embed.', 'mask_token', 'decoder_pos_embed_learned',
                            'decoder_pos_mask_embed', 'decoder_pos_token_embed',
                            'decoder_blocks.', 'decoder_norm.', 'token_emb.', 'mlm_layer.')
RELEASE_UNUSED_KEYS = ('decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed')  # exact names
RELEASE_RENAMES = {'tokenizer_norm.': 'pre_norm.'}


def rename_release_key(key: str) -> str:
    """A released encoder key -> the ``ADDPViT`` name (``tokenizer_norm`` ->
    ``pre_norm``)."""
    for old, new in RELEASE_RENAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def is_unused_release_key(key: str) -> bool:
    """Released tensors that no part uses (sin-cos tables, the pixel head)."""
    return key in RELEASE_UNUSED_KEYS or key.startswith('decoder_pred.')


#: the code-id embedding of an encoder that reads tokenizer ids (token_input)
CODE_EMBEDDING_KEY = 'patch_embed.embedding.weight'


def _describe_foreign(keys) -> Optional[str]:
    """Name the kind of a checkpoint that holds no ADDP encoder."""
    keys = set(keys)
    if any(k.startswith(('encoder.conv_in', 'quantize.embedding', 'decoder.conv_out')) for k in keys):
        return 'a VQ tokenizer (VQGAN) checkpoint'
    if any(k.startswith('token_emb.word_embeddings') for k in keys):
        return 'a MAGE token predictor checkpoint'
    if any(k.startswith(('layers.0.', 'backbone.layers.0.')) for k in keys):
        return "an mmpretrain VisionTransformer checkpoint (keys 'layers.*')"
    return None


def _unwrap(checkpoint) -> Dict[str, torch.Tensor]:
    if not isinstance(checkpoint, dict):
        raise ValueError(f'expected a dict of tensors, got {type(checkpoint).__name__}')
    for key in ('model', 'state_dict', 'module'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return _unwrap(checkpoint[key]) if key != 'state_dict' else checkpoint[key]
    return checkpoint


def convert_to_encoder_state_dict(checkpoint: dict, source: str = 'checkpoint',
                                  keep_pre_norm: bool = True) -> Dict[str, torch.Tensor]:
    """Pick the encoder tensors out of any ADDP checkpoint layout.

    Handles the released ``addp-vit-*-16.pth`` (``model`` key, ``tokenizer_norm``),
    mmaddp runner checkpoints (``state_dict`` with a ``backbone.`` prefix, as
    written for ``ADDP`` pretraining and for downstream models), bare
    ``ADDPViT`` state dicts and DDP ``module.`` prefixes.

    Raises:
        ValueError: if the checkpoint holds no ADDP encoder; names what it
            looks like instead when it can tell.
    """
    state = _unwrap(checkpoint)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    has_input = any(k in state for k in ('patch_embed.proj.weight', CODE_EMBEDDING_KEY))
    if not has_input or not any(k.startswith('blocks.') for k in state):
        kind = _describe_foreign(state) or 'not an ADDP encoder checkpoint'
        raise ValueError(
            f'{source} is {kind}: it has no ADDP encoder weights (expected '
            f"'patch_embed.proj.weight' (pixel input) or '{CODE_EMBEDDING_KEY}' "
            "(code-id input) and 'blocks.*', optionally under 'model' or "
            "'state_dict' with a 'backbone.' prefix)")
    out = {}
    for key, value in state.items():
        if key.startswith(NON_ENCODER_PREFIXES):
            continue
        key = rename_release_key(key)
        if key.startswith('pre_norm.') and not keep_pre_norm:
            continue
        out[key] = value
    return out


def load_addp_encoder_state_dict(path: str, pos_embed_shape: Tuple[int, int],
                                 num_extra_tokens: int = 1,
                                 keep_pre_norm: bool = True) -> Dict[str, torch.Tensor]:
    """Load a checkpoint file and return ``ADDPViT`` tensors, with the
    position embedding (1 x (extra + N) x C) resized to ``pos_embed_shape``."""
    checkpoint = load_checkpoint_file(path)
    state = convert_to_encoder_state_dict(checkpoint, source=f'Checkpoint {path}',
                                          keep_pre_norm=keep_pre_norm)
    if 'pos_embed' in state:
        pos_embed = state['pos_embed']
        num_patches = pos_embed.shape[1] - num_extra_tokens
        side = int(round(num_patches ** 0.5))
        if side * side != num_patches:
            raise ValueError(f'pos_embed in {path} has {num_patches} patch positions, '
                             'which is not a square grid')
        if (side, side) != tuple(pos_embed_shape):
            MMLogger.get_current_instance().info(
                f'Resizing pos_embed from {side}x{side} to '
                f'{pos_embed_shape[0]}x{pos_embed_shape[1]} (bicubic)')
            state['pos_embed'] = resize_pos_embed(
                pos_embed.float(), (side, side), tuple(pos_embed_shape), mode='bicubic',
                num_extra_tokens=num_extra_tokens).to(pos_embed.dtype)
    return state
