"""The checkpoint layouts mmaddp reads, and the one filter that maps them.

Every module and tool reads weights through :func:`read_state_dict`:
unwrap the container (:func:`unwrap_state_dict`), recognise what the file
holds (:func:`recognise_layout`), and rename it for the part that asks
(:func:`filter_state_dict`), in the spirit of timm's
``checkpoint_filter_fn``. The release's key names live only in this module.

Layouts (``recognise_layout`` names):

* ``'addp'``: the released ``addp-vit-*-16.pth`` (``model`` key; encoder
  and decoder keys at top level, optional ``vqgan.*`` / ``token_predictor.*``
  copies of the frozen parts) or an mmaddp ADDP runner checkpoint
  (``backbone.*`` / ``neck.*``).
* ``'token_predictor'``: ``mage-vit*-1600.pth`` or an mmaddp predictor.
* ``'tokenizer'``: ``vqgan_jax_strongaug.ckpt`` or an mmaddp tokenizer.
* ``'release_classifier'``: a classifier fine-tuned by the authors' code
  (encoder keys at top level, ``fc_norm``, ``head``).
* ``'encoder'``: a bare ``ADDPViT`` state dict, or any model whose
  ``backbone.*`` is one (mmaddp classifiers, detectors, segmentors).
* ``'mmpretrain_vit'``: an mmpretrain ``VisionTransformer`` (``layers.*``).
"""
from typing import Dict, Optional

import torch

from .io import load_checkpoint_file

StateDict = Dict[str, torch.Tensor]

#: top-level keys of the released ADDP file, by the part they belong to
RELEASE_ENCODER_PREFIXES = ('patch_embed.', 'cls_token', 'pos_embed', 'tokenizer_norm.', 'blocks.',
                            'norm.')
RELEASE_DECODER_PREFIXES = ('decoder_embed.', 'mask_token', 'decoder_pos_embed_learned',
                            'decoder_pos_mask_embed', 'decoder_pos_token_embed', 'decoder_blocks.',
                            'decoder_norm.', 'token_emb.', 'mlm_layer.')
#: released ADDP tensors no part uses (sin-cos tables; ``decoder_pred.*`` too)
RELEASE_UNUSED_KEYS = ('decoder_pos_embed', 'pos_token_embed', 'pos_mask_embed')
#: released MAGE tensors no part uses: MAE's pixel parts, fixed sin-cos
#: tables, training-only tokens, BERT's ``position_ids`` buffer, a VQGAN copy
MAGE_UNUSED_KEYS = ('pos_embed', 'decoder_pos_embed', 'cls_token', 'mask_token',
                    'token_emb.position_ids')
MAGE_UNUSED_PREFIXES = ('decoder_pred.', 'patch_embed.', 'vqgan.', 'tokenizer.',
                        'data_preprocessor.')
#: release name -> ``ADDPViT`` name
RELEASE_RENAMES = {'tokenizer_norm.': 'pre_norm.', 'fc_norm.': 'pooled_norm.'}
#: ``ADDPViT`` name -> release name (the converters' way back)
RELEASE_NAMES = {new: old for old, new in RELEASE_RENAMES.items()}
#: keys of an ADDP model that are not the encoder's
NON_ENCODER_PREFIXES = ('decoder_', 'mask_token', 'token_emb', 'mlm_layer', 'vqgan.',
                        'token_predictor.', 'pos_token_embed', 'pos_mask_embed', 'tokenizer.',
                        'decoder.', 'head.', 'neck.', 'data_preprocessor.')
#: the code-id embedding of an encoder that reads tokenizer ids (token_input)
CODE_EMBEDDING_KEY = 'patch_embed.embedding.weight'
#: the marker key of each frozen part's own layout
PREDICTOR_MARKER = 'token_emb.word_embeddings.weight'
TOKENIZER_MARKER = 'encoder.conv_in.weight'

DESCRIPTIONS = dict(
    addp='an ADDP checkpoint',
    token_predictor='a MAGE token predictor checkpoint',
    tokenizer='a VQ tokenizer checkpoint (VQGAN)',
    release_classifier='a classifier fine-tuned by the ADDP release',
    encoder='a checkpoint with ADDP encoder weights',
    mmpretrain_vit="an mmpretrain VisionTransformer checkpoint (keys 'layers.*')")


def unwrap_state_dict(checkpoint) -> StateDict:
    """The tensors of a checkpoint: the dict under ``state_dict`` (MMEngine
    runners, VQGAN), ``model`` (the authors' releases) or ``module``, in that
    order, with DDP's ``module.`` prefix removed."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'expected a dict of tensors, got {type(checkpoint).__name__}')
    state = checkpoint
    for key in ('state_dict', 'model', 'module'):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def _has_prefix(state: StateDict, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def recognise_layout(state: StateDict) -> Optional[str]:
    """The layout name of an unwrapped state dict (see the module docstring),
    or ``None`` when it is none of them."""
    if PREDICTOR_MARKER in state:  # first: MAGE also keeps MAE's patch_embed, decoder_embed
        return 'token_predictor'
    if ('patch_embed.proj.weight' in state and 'decoder_embed.weight' in state) or \
            (_has_prefix(state, 'backbone.') and _has_prefix(state, 'neck.decoder_embed')):
        return 'addp'
    if TOKENIZER_MARKER in state or 'quantize.embedding.weight' in state:
        return 'tokenizer'
    if 'head.weight' in state and 'blocks.0.attn.qkv.weight' in state:
        return 'release_classifier'
    encoder = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')} \
        if _has_prefix(state, 'backbone.') else state
    if _has_prefix(encoder, 'blocks.') and ('patch_embed.proj.weight' in encoder
                                            or CODE_EMBEDDING_KEY in encoder):
        return 'encoder'
    if _has_prefix(encoder, 'layers.0.'):
        return 'mmpretrain_vit'
    return None


def rename_release_key(key: str) -> str:
    """A released encoder key -> the ``ADDPViT`` name."""
    for old, new in RELEASE_RENAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def release_key(key: str) -> str:
    """An ``ADDPViT`` key -> the release's name (inverse of :func:`rename_release_key`)."""
    for new, old in RELEASE_NAMES.items():
        if key.startswith(new):
            return old + key[len(new):]
    return key


def _sub(state: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def encoder_state(state: StateDict,
                  keep_pre_norm: bool = True,
                  keep_pooled_norm: bool = True) -> StateDict:
    """``ADDPViT`` tensors of any layout that holds an encoder (the released
    pretraining file, a release classifier, mmaddp checkpoints with or
    without ``backbone.``); drops the LayerNorms a backbone lacks."""
    if _has_prefix(state, 'backbone.'):
        state = _sub(state, 'backbone.')
    out = {}
    for key, value in state.items():
        if key.startswith(NON_ENCODER_PREFIXES) or key in RELEASE_UNUSED_KEYS:
            continue
        key = rename_release_key(key)
        if (key.startswith('pre_norm.') and not keep_pre_norm) or \
                (key.startswith('pooled_norm.') and not keep_pooled_norm):
            continue
        out[key] = value
    return out


def addp_state(state: StateDict) -> StateDict:
    """ADDP model keys (``backbone.*``, ``neck.*``, ``head.*``, plus the copies
    of the frozen parts as ``tokenizer.*`` / ``token_predictor.*``)."""
    if _has_prefix(state, 'backbone.'):
        return dict(state)
    mapped = {}
    for key, value in state.items():
        if key in RELEASE_UNUSED_KEYS or key.startswith('decoder_pred.'):
            continue
        if key.startswith(RELEASE_ENCODER_PREFIXES):
            mapped['backbone.' + rename_release_key(key)] = value
        elif key.startswith(RELEASE_DECODER_PREFIXES):
            mapped['neck.' + key] = value
        elif key.startswith('vqgan.'):
            mapped['tokenizer.' + key[len('vqgan.'):]] = value
        else:
            mapped[key] = value  # token_predictor.* copies; anything else is unexpected
    return mapped


def is_unused_mage_key(key: str) -> bool:
    """Whether a MAGE key has no use in ``TokenPredictor``."""
    return key in MAGE_UNUSED_KEYS or key.startswith(MAGE_UNUSED_PREFIXES)


def token_predictor_state(state: StateDict) -> StateDict:
    """``TokenPredictor`` keys of a MAGE / mmaddp predictor or of a file that
    holds one under ``token_predictor.`` (unused release keys kept: the
    predictor drops and counts them)."""
    if PREDICTOR_MARKER not in state:
        state = _sub(state, 'token_predictor.')
    return dict(state)


def tokenizer_state(state: StateDict) -> StateDict:
    """``VQTokenizer`` keys of a VQGAN / mmaddp tokenizer or of a file that
    holds one under ``tokenizer.`` or ``vqgan.``."""
    if TOKENIZER_MARKER not in state:
        for prefix in ('tokenizer.', 'vqgan.'):
            if prefix + TOKENIZER_MARKER in state:
                state = _sub(state, prefix)
                break
    return {k: v for k, v in state.items() if not k.startswith('data_preprocessor.')}


def classifier_state(state: StateDict) -> StateDict:
    """A release classifier -> mmpretrain ``ImageClassifier`` keys
    (``backbone.*`` with ``fc_norm`` -> ``pooled_norm``, ``head.fc.*``)."""
    out = {'backbone.' + k: v for k, v in encoder_state(state).items()}
    out.update({
        'head.fc.' + k[len('head.'):]: v
        for k, v in state.items() if k.startswith('head.')
    })
    return out


#: what each reader accepts, and how it maps the file
FILTERS = dict(
    addp=(('addp', 'encoder'), addp_state),  # an encoder alone: the decoder is missing
    token_predictor=(('token_predictor', 'addp'), token_predictor_state),
    tokenizer=(('tokenizer', 'addp', 'token_predictor'), tokenizer_state),
    encoder=(('addp', 'release_classifier', 'encoder'), encoder_state),
    release_classifier=(('release_classifier', ), classifier_state),
)
#: the marker each target needs in the mapped state (a file may be of an
#: accepted layout and still not carry the part, e.g. ADDP without vqgan.*)
REQUIRED = dict(token_predictor=PREDICTOR_MARKER, tokenizer=TOKENIZER_MARKER)


def filter_state_dict(state: StateDict,
                      target: str,
                      source: str = 'checkpoint',
                      **kwargs) -> StateDict:
    """Map an unwrapped state dict to the keys of ``target`` (a key of
    :data:`FILTERS`), or raise ``ValueError`` naming ``source``, what it
    holds and what was expected."""
    if target not in FILTERS:
        raise KeyError(f'unknown checkpoint target {target!r}; choose {sorted(FILTERS)}')
    accepted, mapper = FILTERS[target]
    layout = recognise_layout(state)
    mapped = mapper(state, **kwargs) if layout in accepted else None
    if mapped is None or (target in REQUIRED and REQUIRED[target] not in mapped):
        found = DESCRIPTIONS.get(layout, 'of no layout mmaddp knows')
        raise ValueError(f'{source} is not {DESCRIPTIONS[target]}: it is {found} '
                         f'(found e.g. {sorted(state)[:3]})')
    return mapped


def read_state_dict(path: str,
                    target: Optional[str] = None,
                    mmap: bool = False,
                    **kwargs) -> StateDict:
    """Read ``path`` (``weights_only=True``), unwrap it and, with ``target``,
    map it to that part's keys (see :func:`filter_state_dict`)."""
    source = f'Checkpoint {path}'
    try:
        state = unwrap_state_dict(load_checkpoint_file(path, mmap=mmap))
    except ValueError as err:
        if str(err).startswith('Checkpoint '):
            raise
        raise ValueError(f'{source}: {err}') from err
    return state if target is None else filter_state_dict(state, target, source, **kwargs)
