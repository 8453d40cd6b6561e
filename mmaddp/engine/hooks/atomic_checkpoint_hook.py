"""Checkpoints that a kill at any moment cannot truncate.

MMEngine's ``CheckpointHook`` writes ``iter_N.pth`` in place, rewrites
``last_checkpoint`` in place, and removes the oldest kept checkpoint *before*
it writes the new one, so a job killed while saving (pre-emption on a shared
cluster) can leave a truncated file under the final name, a truncated
``last_checkpoint``, or, with ``max_keep_ckpts=1``, no readable checkpoint at
all. MMEngine has no atomic local backend; this module adds one (temporary
file in the same folder, flushed and fsynced, then ``os.replace``) and a hook
that uses it, writes ``last_checkpoint`` after the checkpoint the same way,
and removes stale checkpoints only after both.
"""
import os
import os.path as osp
import tempfile
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from mmaddp.registry import register_hook


def write_atomically(path: str, data: Union[bytes, str]) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old
    content or all of ``data``, never part of it.

    The bytes go to a temporary file in the same folder (so the final rename
    stays on one file system), are flushed and fsynced, and the file is
    renamed over ``path``; on any error the temporary file is removed.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend whose writes are atomic
    (:func:`write_atomically`); select it with
    ``backend_args=dict(backend='atomic_local')``."""

    def put(self, obj: bytes, filepath) -> None:
        write_atomically(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        write_atomically(str(filepath), obj.encode(encoding))


@register_hook()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose saves survive a kill at any moment.

    Differences from MMEngine's hook (the arguments are the same):

    * the checkpoint is written through :class:`AtomicLocalBackend` unless
      ``backend_args`` names another backend;
    * ``last_checkpoint`` is rewritten atomically, after the checkpoint;
    * checkpoints beyond ``max_keep_ckpts`` are removed after the new one is
      complete, not before, so the previous one exists while it is written;
    * temporary files of a save that was killed are removed when training
      starts (they never carry a checkpoint's name).
    """

    def __init__(self, *args, backend_args=None, **kwargs):
        super().__init__(*args, backend_args=backend_args or dict(backend='atomic_local'), **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process() or not osp.isdir(str(self.out_dir)):
            return
        for name in os.listdir(self.out_dir):  # left by a save that was killed
            if name.startswith('.') and name.endswith('.tmp') and '.pth.' in name:
                os.remove(osp.join(self.out_dir, name))
                runner.logger.info(f'AtomicCheckpointHook: removed {name}, the temporary file '
                                   'of a save that did not finish')

    def _save_checkpoint_with_step(self, runner, step, meta):
        stale = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            # MMEngine's deque has maxlen=max_keep_ckpts: make room by hand,
            # remembering what leaves, instead of letting append drop it
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        write_atomically(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in stale:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
