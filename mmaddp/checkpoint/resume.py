"""Which checkpoint of a work dir a run resumes from.

MMEngine's ``find_latest_checkpoint`` trusts ``last_checkpoint`` and the
file it names; a job killed while writing either leaves a run that cannot
resume. :func:`newest_readable_checkpoint` instead tries the work dir's
runner checkpoints newest first and returns the first one that loads.
"""
import glob
import os.path as osp
import re
from typing import List, Optional, Tuple

from .io import load_checkpoint_file

_STEP = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def check_runner_checkpoint(path: str) -> None:
    """Raise ``FileNotFoundError`` / ``ValueError`` (one line, naming the file)
    unless ``path`` is a readable MMEngine runner checkpoint (a dict with
    ``state_dict`` and ``meta``). The tensors are memory-mapped, not read."""
    ckpt = load_checkpoint_file(path, mmap=True)
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt or 'meta' not in ckpt:
        found = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f'{path} is not a training checkpoint to resume from (no state_dict '
                         f'and meta; found {found})')


def newest_readable_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The newest runner checkpoint of ``work_dir`` that loads.

    Candidates are the file named in ``last_checkpoint`` (when that file is
    readable) and every ``iter_N.pth`` / ``epoch_N.pth`` in the folder, by N,
    newest first.

    Returns:
        tuple: the path (None when there is no readable one) and one line
        per skipped candidate saying why it was skipped.
    """
    found = {}
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = _STEP.match(osp.basename(path))
        if match:
            found[osp.abspath(path)] = int(match.group(1))
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer, errors='replace') as f:
            named = f.read().strip()
        if named and osp.abspath(named) not in found:
            found[osp.abspath(named)] = float('inf')  # another name, as the runner wrote it
    skipped = []
    for path in sorted(found, key=lambda p: found[p], reverse=True):
        try:
            check_runner_checkpoint(path)
        except (FileNotFoundError, ValueError) as err:
            skipped.append(f'skipped {path}: {str(err).splitlines()[0]}')
            continue
        return path, skipped
    return None, skipped
