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
# the release's fine-tuning model keeps the pooled LayerNorm as fc_norm
RELEASE_RENAMES = {'tokenizer_norm.': 'pre_norm.', 'fc_norm.': 'pooled_norm.'}


def rename_release_key(key: str) -> str:
    """A released encoder key -> the ``ADDPViT`` name (``tokenizer_norm`` ->
    ``pre_norm``, the fine-tuned classifier's ``fc_norm`` -> ``pooled_norm``)."""
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
                                  keep_pre_norm: bool = True,
                                  keep_pooled_norm: bool = True) -> Dict[str, torch.Tensor]:
    """Pick the encoder tensors out of any ADDP checkpoint layout.

    Handles the released ``addp-vit-*-16.pth`` (``model`` key, ``tokenizer_norm``),
    the authors' fine-tuned classifiers (``model`` key, ``fc_norm`` and
    ``head``; ``fc_norm`` becomes ``pooled_norm``, the head is dropped),
    mmaddp runner checkpoints (``state_dict`` with a ``backbone.`` prefix, as
    written for ``ADDP`` pretraining and for downstream models), bare
    ``ADDPViT`` state dicts and DDP ``module.`` prefixes.

    Args:
        keep_pre_norm, keep_pooled_norm (bool): keep the LayerNorm before the
            blocks / after the pooling (drop them for a backbone without it).

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
        if key.startswith('pooled_norm.') and not keep_pooled_norm:
            continue
        out[key] = value
    return out


def load_addp_encoder_state_dict(path: str, pos_embed_shape: Tuple[int, int],
                                 num_extra_tokens: int = 1,
                                 keep_pre_norm: bool = True,
                                 keep_pooled_norm: bool = True) -> Dict[str, torch.Tensor]:
    """Load a checkpoint file and return ``ADDPViT`` tensors, with the
    position embedding (1 x (extra + N) x C) resized to ``pos_embed_shape``."""
    checkpoint = load_checkpoint_file(path)
    state = convert_to_encoder_state_dict(checkpoint, source=f'Checkpoint {path}',
                                          keep_pre_norm=keep_pre_norm,
                                          keep_pooled_norm=keep_pooled_norm)
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


def is_release_classifier(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a (``model``-unwrapped) state dict is a classifier fine-tuned
    by the authors' code: encoder keys at top level, ``fc_norm`` and ``head``."""
    return ('head.weight' in state and 'blocks.0.attn.qkv.weight' in state and
            not any(k.startswith('backbone.') for k in state))


def convert_release_classifier(checkpoint: dict, source: str = 'checkpoint'
                               ) -> Dict[str, torch.Tensor]:
    """A classifier fine-tuned by the authors' code -> mmpretrain
    ``ImageClassifier`` keys: ``backbone.*`` (``fc_norm`` -> ``pooled_norm``)
    and ``head.fc.*`` (from ``head.*``).

    Raises:
        ValueError: if the file is not such a classifier.
    """
    state = _unwrap(checkpoint)
    if not is_release_classifier(state):
        raise ValueError(f'{source} is not a classifier fine-tuned by the ADDP release '
                         "(needs 'blocks.*' and 'head.weight' at top level)")
    out = {'backbone.' + k: v for k, v in convert_to_encoder_state_dict(
        state, source=source).items()}
    out.update({'head.fc.' + k[len('head.'):]: v for k, v in state.items()
                if k.startswith('head.')})
    return out


def read_classifier_checkpoint(path: str) -> Optional[Dict[str, torch.Tensor]]:
    """The ``ImageClassifier`` state dict of ``path`` when it is a classifier
    fine-tuned by the authors' code; ``None`` for any other checkpoint (mmaddp
    and mmpretrain runner files load as they are). The file is memory-mapped,
    so looking at another kind of checkpoint reads only its keys."""
    checkpoint = load_checkpoint_file(path, mmap=True)
    if not isinstance(checkpoint, dict) or not is_release_classifier(_unwrap(checkpoint)):
        return None
    return convert_release_classifier(checkpoint, source=f'Checkpoint {path}')
