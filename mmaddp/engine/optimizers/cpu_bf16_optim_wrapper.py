"""Mixed precision on CPU: forward passes under bf16 autocast.

mmengine's ``AmpOptimWrapper`` asserts a CUDA (or NPU / MLU) device, so it
cannot give CPU runs bf16 autocast; this wrapper is a plain ``OptimWrapper``
whose ``optim_context`` also enters ``torch.autocast('cpu', torch.bfloat16)``.
bf16 needs no loss scaling (its exponent range is fp32's), so the backward
and the step are ``OptimWrapper``'s own.
"""
import contextlib
from typing import Union

import torch
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper

from mmaddp.registry import register_optim_wrapper

#: /proc/cpuinfo flags of x86 CPUs that multiply bf16 in hardware
FAST_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags() -> set:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU reports bf16 arithmetic in hardware (``avx512_bf16``
    or ``amx_bf16``). oneDNN runs bf16 on other AVX-512 CPUs too, but by
    emulation, slower than fp32, so those count as without."""
    return bool(cpu_flags() & set(FAST_BF16_FLAGS))


@register_optim_wrapper()
class CPUBf16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward passes run under CPU bf16 autocast.

    Args:
        enabled (bool | str): ``'auto'`` (default) turns autocast on when
            :func:`cpu_has_fast_bf16` and logs the choice either way; ``True``
            requires such a CPU (``RuntimeError`` otherwise, naming the
            flags); ``False`` is a plain fp32 ``OptimWrapper``.
        **kwargs: ``OptimWrapper`` arguments (``optimizer``, ``clip_grad``,
            ``accumulative_counts``).
    """

    def __init__(self, *args, enabled: Union[bool, str] = 'auto', **kwargs):
        super().__init__(*args, **kwargs)
        fast = cpu_has_fast_bf16()
        if enabled == 'auto':
            enabled = fast
            MMLogger.get_current_instance().info('CPUBf16OptimWrapper: bf16 autocast ' + (
                'on (the CPU reports ' + '/'.join(sorted(cpu_flags() & set(FAST_BF16_FLAGS))) +
                ')' if fast else 'off: the CPU reports none of ' + ', '.join(FAST_BF16_FLAGS)))
        elif enabled is True and not fast:
            raise RuntimeError('bf16 autocast asked for, but this CPU reports none of '
                               f'{", ".join(FAST_BF16_FLAGS)} (bf16 would be emulated, slower '
                               'than fp32); use enabled="auto" or False')
        elif enabled not in (True, False):
            raise ValueError(f"enabled must be True, False or 'auto', got {enabled!r}")
        self.bf16_enabled = bool(enabled)

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16, enabled=self.bf16_enabled):
            yield
