"""Imported by every Python process started with this folder on PYTHONPATH
(the kill tests of tests/test_reliability.py): when ``MMADDP_STALL`` is set,
the training process writes ``MMADDP_STALL_MARKER`` and sleeps at a chosen
point, so that the test can ``kill -9`` it exactly there.

``MMADDP_STALL=iter:N``: at the start of training iteration N (1-based).
``MMADDP_STALL=save:NAME``: while a file whose path contains NAME is being
written, after its bytes are flushed and before it is renamed into place.
"""
import os
import time

_STALL = os.environ.get('MMADDP_STALL')
_MARKER = os.environ.get('MMADDP_STALL_MARKER')


def _stall():
    rank = os.environ.get('RANK', '0')
    with open(f'{_MARKER}.{rank}', 'w') as f:
        f.write(str(os.getpid()))
    time.sleep(600)


if _STALL and _MARKER:
    kind, _, what = _STALL.partition(':')
    if kind == 'iter':
        from mmengine.runner import loops

        _run_iter = loops.IterBasedTrainLoop.run_iter

        def run_iter(self, data_batch):
            if self._iter + 1 == int(what):
                _stall()
            return _run_iter(self, data_batch)

        loops.IterBasedTrainLoop.run_iter = run_iter
    elif kind == 'save':
        _fsync = os.fsync

        def fsync(fd):
            try:
                path = os.readlink(f'/proc/self/fd/{fd}')
            except OSError:
                path = ''
            if what in path:
                _stall()
            return _fsync(fd)

        os.fsync = fsync
