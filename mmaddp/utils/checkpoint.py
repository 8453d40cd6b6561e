"""Checkpoint loading that keeps ``torch.load(weights_only=True)`` on.

torch >= 2.6 refuses to unpickle anything but tensors and plain containers
unless the class is allow-listed. MMEngine's runner checkpoints (``meta``,
``message_hub``, optimizer and scheduler state) carry a few more classes;
:func:`register_safe_checkpoint_globals` allows exactly those, so that
``--resume`` works without disabling the check globally.
"""
import argparse
import os.path as osp
import pickle
from collections import OrderedDict, defaultdict

import numpy as np
import torch


def _safe_globals():
    from mmengine.logging.history_buffer import HistoryBuffer
    classes = [
        HistoryBuffer,               # message_hub log scalars
        np.dtype,                    # dtypes of numpy scalars in logs / meta
        np.ndarray,
        np.core.multiarray._reconstruct,
        np.core.multiarray.scalar,
        type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType and friends
        type(np.dtype(np.float32)),
        type(np.dtype(np.int64)),
        type(np.dtype(np.int32)),
        type(np.dtype(np.bool_)),
        OrderedDict, defaultdict,
        argparse.Namespace,          # 'args' of MAE-style released checkpoints
    ]
    return classes


def register_safe_checkpoint_globals():
    """Allow-list the classes MMEngine checkpoints need for weights_only load."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(_safe_globals())


def load_checkpoint_file(path: str, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and errors that name the file.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable torch checkpoint, or it holds
            objects outside the allow list.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint file not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f'Checkpoint {path} holds objects that are not allowed by '
            f'torch.load(weights_only=True): {str(err).splitlines()[0]}. Re-save only its '
            "tensors (e.g. torch.save({'model': ckpt['model']}, ...)).") from err
    except Exception as err:  # the unpickler raises many types on garbage
        raise ValueError(f'Checkpoint {path} is not a readable torch file '
                         f'(corrupt or truncated?): {err}') from err
