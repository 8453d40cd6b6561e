"""Launch settings shared by ``tools/train.py`` and ``tools/test.py``."""
import os

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
