"""Stop a run at the first non-finite loss, before anything saves its state.

mmdet's ``CheckInvalidLossHook`` checks every ``interval`` iterations with an
``assert`` (gone under ``python -O``), names neither the iteration nor the
value, and is registered in mmdet's scope only; MMEngine has no such hook.
This one checks every iteration in every scope and raises
:class:`NonFiniteLossError` with the iteration and the loss terms. It runs at
priority ``ABOVE_NORMAL``, before the logger and the checkpoint hook of the
same iteration, so the last checkpoint on disk is the last good one.
"""
import math

import torch
from mmengine.hooks import Hook

from mmaddp.registry import register_hook


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@register_hook()
class NonFiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` when the loss of an iteration is
    NaN or infinite (under fp32, bf16 autocast or fp16 alike: the check reads
    the logged fp32 value)."""

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        loss = outputs['loss']
        value = float(loss.detach().float()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            return
        parts = ', '.join(f'{k}={float(v.detach().float().mean()):.4g}' for k, v in outputs.items()
                          if isinstance(v, torch.Tensor))
        last = runner.message_hub.get_info('last_ckpt')
        kept = f'; the last checkpoint, {last}, is kept' if last else '; no checkpoint was saved'
        raise NonFiniteLossError(f'non-finite loss at iteration {runner.iter + 1}: {parts}{kept}')
