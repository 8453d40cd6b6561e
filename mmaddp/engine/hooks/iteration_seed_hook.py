"""Random draws that depend on the iteration only, so a resumed run draws
what an uninterrupted one draws.

MMEngine's checkpoints hold weights, optimizer, schedulers and message hub,
not the random generators, and a resumed run re-seeds from the config. Saving
the generators with the checkpoint is not enough either: between a save and
the next forward pass the data loader draws from the global generator when it
starts a new epoch (its workers' base seed), and a resumed run makes other
such draws while it skips the batches already trained on. This hook therefore
seeds Python's, NumPy's and torch's generators (CUDA included) before every
training iteration from (config seed, iteration, rank): the masks, dropout
and drop-path of iteration k are the same however the run got there.

Loader workers are seeded by MMEngine per worker and replay the same
transforms while the resumed run skips batches, so random augmentation in
workers resumes exactly too; with ``num_workers=0`` the transforms draw from
the main process's generators in between, and an exact resume needs workers.
"""
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from mmaddp.registry import register_hook


@register_hook()
class IterationSeedHook(Hook):
    """Seed the global generators before each training iteration from the
    config's seed, the iteration and (with ``diff_rank_seed=True`` in the
    config's ``randomness``) the rank.

    Args:
        seed (int, optional): the base seed. Defaults to the runner's seed
            (``randomness.seed``).
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed=None):
        self.seed = seed

    def iteration_seed(self, runner, iteration: int) -> int:
        base = self.seed if self.seed is not None else runner.seed
        rank = get_rank() if runner.cfg.get('randomness', {}).get('diff_rank_seed') else 0
        return int(
            np.random.SeedSequence([int(base) % 2**32, iteration, rank]).generate_state(1)[0])

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed = self.iteration_seed(runner, runner.iter)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # CUDA generators too
