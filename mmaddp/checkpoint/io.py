"""Checkpoint reading that keeps ``torch.load(weights_only=True)`` on.

torch >= 2.6 refuses to unpickle anything but tensors and plain containers
unless the class is allow-listed. MMEngine's runner checkpoints (``meta``,
``message_hub``, optimizer and scheduler state) carry a few more classes;
:func:`register_safe_checkpoint_globals` allows exactly those, so that
``--resume`` works without disabling the check globally.
"""
import argparse
import os.path as osp
import pickle
import re
import zipfile

import numpy as np
import torch


def _history_buffer_getattr(obj, name):
    """Stand-in for ``getattr`` that only resolves HistoryBuffer's statistics.

    ``HistoryBuffer.__getstate__`` pickles its statistic methods
    (``HistoryBuffer.min`` ...), which protocol 2 writes as
    ``getattr(HistoryBuffer, 'min')``. Allowing the real ``getattr`` would let
    a checkpoint reach any attribute; this allows exactly those methods.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return HistoryBuffer._statistics_methods[name]
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({getattr(obj, "__name__", type(obj).__name__)}, '
        f'{name!r}), which is not an allowed HistoryBuffer statistic')


def _safe_globals():
    """The classes found in MMEngine runner checkpoints, besides tensors."""
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer()  # registers the default statistic methods
    return [
        HistoryBuffer,  # message_hub.log_scalars
        (_history_buffer_getattr, 'builtins.getattr'),  # its statistic methods
        np.ndarray,  # log histories
        np.dtype,
        # concrete dtype classes whose state a pickled dtype restores
        *{
            type(np.dtype(t))
            for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_)
        },
        np.core.multiarray._reconstruct,
        np.core.multiarray.scalar,  # numpy scalars (eta, metrics)
        argparse.Namespace,  # 'args' of MAE-style releases
    ]


def register_safe_checkpoint_globals():
    """Allow-list the classes MMEngine checkpoints need for weights_only load."""
    torch.serialization.add_safe_globals(_safe_globals())


def load_checkpoint_file(path: str, map_location='cpu', mmap: bool = False):
    """``torch.load`` with ``weights_only=True`` and errors that name the file.

    ``mmap=True`` maps the tensors instead of reading them (cheap when only
    the keys are looked at); files in torch's legacy format, which cannot be
    mapped, are read as usual.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable torch checkpoint, or it holds
            objects outside the allow list.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint file not found: {path}')
    try:
        if mmap:
            try:
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            except RuntimeError as err:
                if 'mmap' not in str(err):
                    raise
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own text advises weights_only=False: never pass it on
        found = re.search(r'GLOBAL ([\w.]+)', str(err))
        if found is None or not zipfile.is_zipfile(path):
            raise ValueError(f'Checkpoint {path} is not a readable torch file (corrupt or '
                             'truncated?)') from None
        raise ValueError(f'Checkpoint {path} holds a {found.group(1)} object, which loading with '
                         "weights_only=True does not allow: re-save only its tensors (e.g. "
                         "torch.save({'state_dict': ckpt['state_dict']}, ...))") from None
    except Exception as err:  # the unpickler raises many types on garbage
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f'Checkpoint {path} is not a readable torch file '
                         f'(corrupt or truncated?): {reason}') from err


def load_state_into(module, state: dict, source: str):
    """Load ``state`` into ``module`` non-strictly after checking shapes.

    Submodules that define ``upgrade_state_dict(state, prefix)`` first
    rewrite earlier layouts of their own keys (as their
    ``_load_from_state_dict`` does on the runner's path), so the check sees
    what will be loaded. Raises ``ValueError`` naming the first mismatching
    tensors (a checkpoint of another size), logs missing and unexpected keys,
    and returns the ``load_state_dict`` result; ``state`` is not modified.
    """
    from mmengine.logging import MMLogger
    state = dict(state)
    for prefix, sub in module.named_modules(prefix=''):
        if hasattr(sub, 'upgrade_state_dict'):
            sub.upgrade_state_dict(state, f'{prefix}.' if prefix else '')
    own = module.state_dict()
    bad = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state.items() if k in own and own[k].shape != v.shape
    ]
    name = type(module).__name__
    if bad:
        raise ValueError(f'{source} does not fit this {name}: {bad[:5]}')
    result = module.load_state_dict(state, strict=False)
    logger = MMLogger.get_current_instance()
    logger.info(f'{name}: loaded {len(state)} tensors from {source}')
    if result.missing_keys:
        logger.warning(f'{name} missing keys (kept as initialised): {result.missing_keys}')
    if result.unexpected_keys:
        logger.warning(f'{name} unexpected keys (ignored): {result.unexpected_keys}')
    return result
