"""Holding frozen sub-models (tokenizer, token predictor) beside a model.

ADDP, the token predictor and the token-input embedding each run a frozen
model that is configured (and checkpointed) on its own. Registered as a
submodule it would enter the optimizer's parameter groups, the gradient
norm, DDP's parameter set, the runner's checkpoints and the runner's weight
init; held in a plain dict it would not follow ``.to()`` / ``.half()``.
:class:`FrozenPartsMixin` keeps them out of the module tree and moves /
casts them with the model. No mmengine or torch class does this (mmengine's
``BaseModule`` only knows registered children).
"""
from typing import Dict

import torch.nn as nn


class FrozenPartsMixin:
    """Mixin for an ``nn.Module`` that runs frozen sub-models.

    Call :meth:`hold_frozen` in ``__init__`` (after ``super().__init__()``);
    read a part with :meth:`frozen_part` (or a property). The parts are put
    in eval mode with gradients off, follow ``_apply`` (device / dtype
    moves) and stay in eval mode whatever ``train()`` asks;
    :meth:`frozen_parts_moved` runs after every move (drop caches there).
    """

    def hold_frozen(self, **parts: nn.Module) -> None:
        """Hold ``parts`` (name -> module), frozen."""
        held = self.__dict__.setdefault('_frozen_parts', {})
        for name, part in parts.items():
            if part is None:
                continue
            part.requires_grad_(False)
            part.eval()
            held[name] = part

    @property
    def frozen_parts(self) -> Dict[str, nn.Module]:
        """The held parts, name -> module (empty when none)."""
        return self.__dict__.get('_frozen_parts', {})

    def frozen_part(self, name: str):
        """The held part ``name``, or ``None``."""
        return self.frozen_parts.get(name)

    def frozen_parts_moved(self) -> None:
        """Hook called after the parts followed a device / dtype move."""

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for part in self.frozen_parts.values():
            part._apply(fn, *args, **kwargs)
        self.frozen_parts_moved()
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self.frozen_parts.values():
            part.eval()
        return self
