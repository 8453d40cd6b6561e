import os.path as osp
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _pattern(label: int, idx: int, size: int = 32) -> np.ndarray:
    """Class 0: horizontal stripes, class 1: vertical; phase and colour vary."""
    rng = np.random.default_rng(1000 * label + idx)
    coords = np.arange(size)
    period = 4 + idx % 3
    wave = (np.sin(2 * np.pi * (coords + idx) / period) > 0).astype(np.float32)
    img = np.tile(wave[:, None], (1, size)) if label == 0 else np.tile(wave[None, :], (size, 1))
    colour = rng.uniform(0.4, 1.0, size=3)
    img = img[..., None] * colour * 255 + rng.normal(0, 8, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope='session')
def tiny_cls_root(tmp_path_factory):
    """A two-class ImageNet-layout folder (train/CLASS/*.png, val/CLASS/*.png)."""
    root = tmp_path_factory.mktemp('tiny_cls')
    for split, count, offset in (('train', 8, 0), ('val', 4, 100)):
        for label in (0, 1):
            folder = root / split / f'class_{label}'
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(_pattern(label, offset + i)).save(folder / f'{i:03d}.png')
    return str(root)


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """The bundled demo data, built once per test session (seconds)."""
    from mmaddp.datasets import build_demo_data
    root = str(tmp_path_factory.mktemp('demo') / 'demo')
    build_demo_data(root, seed=0)
    return root
