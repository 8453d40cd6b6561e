"""Launch set-up and tear-down shared by ``tools/train.py``,
``tools/test.py`` and ``tools/generate.py``."""
import os
import time

import torch
import torch.distributed as dist


def prepare_launch(cfg) -> None:
    """Make a distributed launch work on machines without GPUs.

    With GPUs nothing changes (MMEngine's NCCL set-up is used). Without them,
    a ``pytorch`` launch (``torchrun``, as in ``tools/dist_train.sh``) gets the
    gloo backend: the process group is created here because MMEngine's own
    set-up calls ``torch.cuda.set_device``, and the model wrapper becomes
    :class:`DeviceAwareDistributedDataParallel`, which drops ``device_ids``
    for CPU modules.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'launcher={launcher!r} needs GPUs; on a CPU-only machine use '
                           'tools/dist_train.sh (torchrun, gloo backend)')
    missing = [
        k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch needs the environment of torchrun; missing {missing}')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg', None) or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(wrapper, type='DeviceAwareDistributedDataParallel')
    if not dist.is_initialized():
        dist.init_process_group(
            backend='gloo', rank=int(os.environ['RANK']), world_size=int(os.environ['WORLD_SIZE']))


def close_launch(settle_s: float = 0.2) -> None:
    """End this process's part in a distributed launch; without a process
    group it does nothing.

    The tools call it as the last statement of ``main``. It waits for every
    rank (a barrier), destroys the default process group (MMEngine creates
    it and never does) and then sleeps ``settle_s`` seconds, releasing the
    GIL. The sleep is for gloo's worker threads: DDP's reducer keeps the
    group alive past ``destroy_process_group`` (torch 2.14), so the threads
    are not joined, and the thread that ran the last collective frees its
    tensors afterwards, which takes the GIL. If the interpreter has begun to
    shut down by then, Python ends that thread inside a C++ destructor and
    the rank aborts (SIGABRT, "terminate called without an active
    exception"): torchrun then reports a run whose ranks all finished as
    failed. A core dump of such a rank shows exactly that thread in
    ``~AsyncBroadcastWork`` while the main thread is in ``Py_FinalizeEx``.

    Args:
        settle_s (float): seconds to let those threads finish. Defaults to
            0.2.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    time.sleep(settle_s)
