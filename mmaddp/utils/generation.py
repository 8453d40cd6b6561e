"""Sample indexing for ADDP generation spread over ranks.

Output index ``i`` of a generation run is produced from its own seed
(:func:`sample_seed`), and the indices are dealt round-robin over the ranks
(:func:`shard_indices`), so a sample does not depend on how many processes
made it, on the batch size, or on which other samples shared its batch
(``ADDP.generate(seeds=...)`` gives every sample its own generator).
"""
import os
import os.path as osp
import re
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch

#: file names of generated samples: 000000.png, 000001.png, ...
SAMPLE_NAME = re.compile(r'^\d{6}\.png$')


def sample_seed(base_seed: int, index: int) -> int:
    """The seed of output ``index`` in a run started with ``base_seed``.

    ``numpy.random.SeedSequence`` mixes both numbers, so runs with nearby base
    seeds do not share samples (``base + index`` would: seed 0 / index 1
    equals seed 1 / index 0).
    """
    if base_seed < 0 or index < 0:
        raise ValueError(f'seed and index must be >= 0, got {base_seed} and {index}')
    state = np.random.SeedSequence([int(base_seed), int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # 62 bits, fits torch's int64 seed


def shard_indices(num_samples: int, rank: int, world_size: int) -> List[int]:
    """Indices of rank ``rank`` among ``world_size``: rank, rank + W, ...

    Every index in ``range(num_samples)`` belongs to exactly one rank.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} outside world size {world_size}')
    return list(range(rank, num_samples, world_size))


def iter_batches(indices: Sequence[int], batch_size: int) -> Iterator[List[int]]:
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    for start in range(0, len(indices), batch_size):
        yield list(indices[start:start + batch_size])


@torch.no_grad()
def generate_indexed(model, indices: Sequence[int], base_seed: int, batch_size: int,
                     **generate_kwargs) -> Iterator[Tuple[List[int], torch.Tensor]]:
    """Yield ``(batch_indices, images)`` for ``indices``, images B x 3 x H x W
    in [0, 1] on the CPU, each made from :func:`sample_seed` of its index."""
    for batch in iter_batches(indices, batch_size):
        seeds = [sample_seed(base_seed, i) for i in batch]
        images = model.generate(len(batch), seeds=seeds, **generate_kwargs)
        yield batch, images.float().cpu()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded as ``torchvision.utils.save_image`` does."""
    return images.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def list_sample_files(folder: str) -> List[str]:
    """The ``NNNNNN.png`` sample files directly in ``folder``, sorted."""
    return sorted(f for f in os.listdir(folder) if SAMPLE_NAME.match(f))


def check_output_dir(folder: str, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless ``overwrite``; a path that
    exists but is not a folder is always refused."""
    if osp.exists(folder) and not osp.isdir(folder):
        raise NotADirectoryError(f'--out {folder} exists and is not a directory')
    if osp.isdir(folder) and os.listdir(folder) and not overwrite:
        raise FileExistsError(f'Output directory {folder} is not empty; pass --overwrite to '
                              'replace its samples or choose another --out')
