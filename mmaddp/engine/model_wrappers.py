"""Distributed data parallel that also runs on CPU-only machines."""
from mmengine.model import MMDistributedDataParallel

from mmaddp.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAwareDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for CPU models.

    MMEngine's runner always passes ``device_ids=[LOCAL_RANK]``, which torch
    rejects for a module on the CPU. With this wrapper (set by
    ``tools/train.py`` when no GPU is present) several CPU processes train
    with the gloo backend; on GPUs it behaves exactly like its parent.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        first = next(module.parameters(), None)
        if first is not None and first.device.type == 'cpu':
            device_ids = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=device_ids, **kwargs)
