"""Converting the authors' released files to mmaddp checkpoints and back.

:mod:`.layouts` maps a released file on the fly for the part that reads it;
the converters here write that mapping out once, so a user can keep mmaddp
checkpoints (what the runners save, what ``load_from`` and ``init_cfg``
read) and turn them back into the release's layout for the authors' code.

A released file becomes one or more *parts*, each a plain state dict with
mmaddp's key names:

* ``'addp'``: the ADDP model (``backbone.*`` = ``ADDPViT``, ``neck.*`` =
  ``TokenDecoder``), from ``addp-vit-*-16.pth``;
* ``'tokenizer'``: a ``VQTokenizer``, from ``vqgan_jax_strongaug.ckpt`` or
  the ``vqgan.*`` copy inside an ADDP / MAGE file;
* ``'token_predictor'``: a ``TokenPredictor``, from ``mage-vit*-1600.pth``
  or the ``token_predictor.*`` copy inside an ADDP file;
* ``'classifier'``: an mmpretrain ``ImageClassifier`` with an ``ADDPViT``
  backbone, from a classifier fine-tuned by the release.

Tensors no mmaddp part reads (MAE's pixel parts kept by MAGE, fixed sin-cos
tables, ``decoder_pred``, BERT's ``position_ids``, the predictor's own VQGAN
copy) are dropped and listed in :attr:`Conversion.dropped`; the way back
writes every other tensor under its release name, so release -> mmaddp ->
release returns the file less exactly those tensors, and mmaddp -> release
-> mmaddp returns every tensor unchanged.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .layouts import (RELEASE_DECODER_PREFIXES, RELEASE_ENCODER_PREFIXES, RELEASE_UNUSED_KEYS,
                      StateDict, _has_prefix, _sub, addp_state, classifier_state,
                      is_unused_mage_key, recognise_layout, release_key, tokenizer_state)

#: released layout -> the part its main tensors become
MAIN_PART = dict(
    addp='addp',
    token_predictor='token_predictor',
    tokenizer='tokenizer',
    release_classifier='classifier')
#: part -> the release's container key and a description of its file
RELEASE_FILES = dict(
    addp=('model', 'addp-vit-*-16.pth'),
    token_predictor=('model', 'mage-vit*-1600.pth'),
    tokenizer=('state_dict', 'vqgan_jax_strongaug.ckpt'),
    classifier=('model', 'a classifier fine-tuned by the release'))


@dataclass
class Conversion:
    """The result of :func:`release_to_mmaddp`.

    Attributes:
        layout (str): the recognised layout of the source (a key of :data:`MAIN_PART`).
        parts (dict): part name -> state dict with mmaddp's names; the main
            part first, then the frozen-part copies the file held.
        dropped (list): source keys no part reads, sorted.
    """
    layout: str
    parts: Dict[str, StateDict]
    dropped: List[str] = field(default_factory=list)

    @property
    def main(self) -> str:
        """The name of the part the file is about."""
        return MAIN_PART[self.layout]


def _split_predictor(state: StateDict):
    kept = {k: v for k, v in state.items() if not is_unused_mage_key(k)}
    return kept, sorted(k for k in state if is_unused_mage_key(k))


def release_to_mmaddp(state: StateDict, source: str = 'checkpoint') -> Conversion:
    """Convert an unwrapped released state dict (see
    :func:`~mmaddp.checkpoint.unwrap_state_dict`) to mmaddp parts.

    Args:
        state (dict): the released tensors, by their release names.
        source (str): how to name the input in errors. Defaults to 'checkpoint'.

    Returns:
        Conversion: the parts and the dropped keys.

    Raises:
        ValueError: the input is of no released layout, or is already an
            mmaddp ADDP checkpoint.
    """
    layout = recognise_layout(state)
    if layout not in MAIN_PART:
        raise ValueError(f'{source} is not a released ADDP, MAGE, VQGAN or classifier file '
                         f'(found e.g. {sorted(state)[:3]})')
    if layout == 'addp' and _has_prefix(state, 'backbone.'):
        raise ValueError(f'{source} is already an mmaddp ADDP checkpoint (backbone.* / neck.*); '
                         'convert it back with tools/model_converters/mmaddp2release.py')
    if layout == 'addp':
        mapped = addp_state(state)
        predictor, unused = _split_predictor(_sub(mapped, 'token_predictor.'))
        parts = dict(
            addp={
                k: v
                for k, v in mapped.items() if not k.startswith(('tokenizer.', 'token_predictor.'))
            },
            tokenizer=_sub(mapped, 'tokenizer.'),
            token_predictor=predictor)
        dropped = [k for k in state if k in RELEASE_UNUSED_KEYS or k.startswith('decoder_pred.')]
        dropped += ['token_predictor.' + k for k in unused]
    elif layout == 'token_predictor':
        predictor, dropped = _split_predictor(state)
        parts = dict(token_predictor=predictor, tokenizer=_sub(state, 'vqgan.'))
        dropped = [k for k in dropped if not k.startswith('vqgan.')]
    elif layout == 'tokenizer':
        parts = dict(tokenizer=tokenizer_state(state))
        dropped = [k for k in state if k.startswith('data_preprocessor.')]
    else:
        parts = dict(classifier=classifier_state(state))
        dropped = []
    unknown = [k for k in parts.get('addp', {}) if not k.startswith(('backbone.', 'neck.'))]
    if unknown:
        raise ValueError(f'{source} holds tensors the ADDP layout does not know: {unknown[:5]}')
    return Conversion(layout, {k: v for k, v in parts.items() if v}, sorted(dropped))


def mmaddp_part(state: StateDict, source: str = 'checkpoint') -> str:
    """The part an unwrapped mmaddp checkpoint holds (a key of
    :data:`RELEASE_FILES`), or ``ValueError`` naming ``source``."""
    layout = recognise_layout(state)
    if layout == 'addp' and _has_prefix(state, 'backbone.'):
        return 'addp'
    if layout in ('token_predictor', 'tokenizer'):
        return layout
    if layout == 'encoder' and 'head.fc.weight' in state and _has_prefix(state, 'backbone.'):
        return 'classifier'
    raise ValueError(f'{source} is not an mmaddp ADDP, token predictor, tokenizer or '
                     f'ADDPViT classifier checkpoint (found e.g. {sorted(state)[:3]})')


def mmaddp_to_release(part: str,
                      state: StateDict,
                      tokenizer: Optional[StateDict] = None,
                      token_predictor: Optional[StateDict] = None) -> dict:
    """Write an mmaddp part in the release's layout.

    Args:
        part (str): a key of :data:`RELEASE_FILES` (see :func:`mmaddp_part`).
        state (dict): the part's mmaddp state dict.
        tokenizer (dict, optional): a tokenizer state dict to store as the
            file's ``vqgan.*`` copy (ADDP and MAGE files). Defaults to None.
        token_predictor (dict, optional): a predictor state dict to store as
            the ADDP file's ``token_predictor.*`` copy. Defaults to None.

    Returns:
        dict: the file's content, ``{'model': ...}`` or, for the tokenizer,
        ``{'state_dict': ...}``, as the release saved them.
    """
    if part not in RELEASE_FILES:
        raise KeyError(f'unknown part {part!r}; choose {sorted(RELEASE_FILES)}')
    if part == 'addp':
        out = {}
        for key, value in state.items():
            if key.startswith('backbone.'):
                name = release_key(key[len('backbone.'):])
                if not name.startswith(RELEASE_ENCODER_PREFIXES):
                    raise ValueError(f'{key} has no place in the released ADDP encoder')
            elif key.startswith('neck.'):
                name = key[len('neck.'):]
                if not name.startswith(RELEASE_DECODER_PREFIXES):
                    raise ValueError(f'{key} has no place in the released ADDP decoder')
            else:
                raise ValueError(f'{key} is neither backbone.* nor neck.*: not an ADDP model key')
            out[name] = value
    elif part == 'classifier':
        out = {}
        for key, value in state.items():
            if key.startswith('backbone.'):
                out[release_key(key[len('backbone.'):])] = value
            elif key.startswith('head.fc.'):
                out['head.' + key[len('head.fc.'):]] = value
            elif not key.startswith('data_preprocessor.'):
                raise ValueError(f'{key} has no place in a released classifier')
    else:
        out = dict(state)
    if tokenizer is not None:
        if part not in ('addp', 'token_predictor'):
            raise ValueError(f'a released {part} file holds no tokenizer copy')
        out.update({'vqgan.' + k: v for k, v in tokenizer.items()})
    if token_predictor is not None:
        if part != 'addp':
            raise ValueError(f'a released {part} file holds no token predictor copy')
        out.update({'token_predictor.' + k: v for k, v in token_predictor.items()})
    return {RELEASE_FILES[part][0]: out}
