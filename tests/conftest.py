import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for path in (ROOT, osp.join(ROOT, 'tools')):  # the package, and the demo's helpers
    if path not in sys.path:
        sys.path.insert(0, path)
TOKENIZER_CFG = osp.join(ROOT, 'configs', 'vq_tokenizer',
                         'vq-tokenizer-tiny-f4_1xb64-1000i_demo.py')
PREDICTOR_CFG = osp.join(ROOT, 'configs', 'token_predictor',
                         'token-predictor-tiny_1xb64-2400i_demo.py')
ITERS = 150  # short training runs of the tiny configs in the tests


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
    from demo.demo_data import build_demo_data
    root = str(tmp_path_factory.mktemp('demo') / 'demo')
    build_demo_data(root, seed=0)
    return root


def run(args):
    """Run a python tool of the repository; fail with its output."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def short_run_options(data_root, max_iters=ITERS):
    """--cfg-options for a short run of a tiny demo config."""
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}', 'train_dataloader.batch_size=32',
        f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
        f'default_hooks.checkpoint.interval={max_iters}', f'param_scheduler.1.end={max_iters}'
    ]


@pytest.fixture(scope='session')
def trained_tokenizer(tmp_path_factory, demo_root):
    """The tiny tokenizer trained briefly on the bundled corpus."""
    work = tmp_path_factory.mktemp('tokenizer')
    data_root = osp.join(demo_root, 'pretrain')
    run([
        'tools/train.py', TOKENIZER_CFG, '--work-dir',
        str(work), '--cfg-options', *short_run_options(data_root)
    ])
    return work / f'iter_{ITERS}.pth', data_root


@pytest.fixture(scope='session')
def trained_predictor(tmp_path_factory, trained_tokenizer):
    """A tiny token predictor trained briefly on the tiny tokenizer's ids."""
    tokenizer_ckpt, data_root = trained_tokenizer
    work = tmp_path_factory.mktemp('predictor')
    run([
        'tools/train.py', PREDICTOR_CFG, '--work-dir',
        str(work), '--cfg-options', *short_run_options(data_root),
        f'model.tokenizer.checkpoint={tokenizer_ckpt}'
    ])
    return work / f'iter_{ITERS}.pth'


def build_runner(cfg):
    """``Runner.from_cfg`` for a test that builds runners in-process.

    mmengine keeps one visualizer per name in a process (``ManagerMixin``) and
    the OpenMMLab default runtimes name theirs ``'visualizer'``, so a second
    runner would reuse an earlier test's visualizer and its save_dir. The
    tools build one runner per process; the tests name each visualizer after
    the run's work dir instead."""
    from mmengine.runner import Runner
    if cfg.get('visualizer'):
        cfg.visualizer.name = f'visualizer_{osp.basename(osp.normpath(cfg.work_dir))}'
    return Runner.from_cfg(cfg)


def load_tool(relpath: str):
    """Import a script of ``tools/`` (e.g. ``'dataset_converters/cache_code_ids.py'``)
    as a module, to test its functions."""
    import importlib.util
    path = osp.join(ROOT, 'tools', relpath)
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
