"""tools/train.py, --resume, tools/test.py and tools/dist_train.sh on CPU."""
import ast
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mmaddp.utils import merge_cfg_options_strict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')


def data_options(root):
    return [
        f'{k}.dataset.data_root={root}'
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def run(args, env=None):
    env = dict(env or os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def train(work_dir, root, *extra, cfg_options=()):
    return run([
        sys.executable, 'tools/train.py', CFG, '--work-dir',
        str(work_dir), *extra, '--cfg-options', *data_options(root), *cfg_options
    ])


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)  # what --resume does


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, tiny_cls_root):
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    train(work_dir, tiny_cls_root)
    return work_dir


def test_resume_continues_exactly(tmp_path, tiny_cls_root, uninterrupted):
    train(tmp_path, tiny_cls_root, cfg_options=['train_cfg.max_iters=2'])
    first = load(tmp_path / 'iter_2.pth')
    assert first['meta']['iter'] == 2
    proc = train(tmp_path, tiny_cls_root, '--resume')
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Iter(train) [1/4]' not in log and 'Iter(train) [3/4]' in log

    resumed = load(tmp_path / 'iter_4.pth')
    reference = load(uninterrupted / 'iter_4.pth')
    assert resumed['meta']['iter'] == reference['meta']['iter'] == 4
    # AdamW state continued: step counts reach 4, moments equal the reference
    for pid, state in resumed['optimizer']['state'].items():
        assert int(state['step']) == 4
        torch.testing.assert_close(
            state['exp_avg_sq'], reference['optimizer']['state'][pid]['exp_avg_sq'], atol=0, rtol=0)
    for key, value in reference['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][key], value, atol=0, rtol=0, msg=key)
    changed = any(not torch.equal(first['state_dict'][k], v)
                  for k, v in resumed['state_dict'].items())
    assert changed


def test_resume_from_explicit_checkpoint(tmp_path, tiny_cls_root, uninterrupted):
    proc = train(tmp_path, tiny_cls_root, '--resume', str(uninterrupted / 'iter_2.pth'))
    assert 'resumed epoch: 0, iter: 2' in proc.stdout + proc.stderr
    a = load(tmp_path / 'iter_4.pth')['state_dict']
    b = load(uninterrupted / 'iter_4.pth')['state_dict']
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_test_tool_prints_top1(tmp_path, tiny_cls_root, uninterrupted):
    proc = run([
        sys.executable, 'tools/test.py', CFG,
        str(uninterrupted / 'iter_4.pth'), '--work-dir',
        str(tmp_path), '--cfg-options', *data_options(tiny_cls_root)
    ])
    metrics = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_cpu_processes(tmp_path, tiny_cls_root):
    """2 gloo processes x batch 4 == 1 process x batch 8 (same samples, same
    mean gradient), so DDP really averages across ranks."""
    dist_dir, single_dir = tmp_path / 'dist', tmp_path / 'single'
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable)
    proc = run([
        'bash', 'tools/dist_train.sh', CFG, '2', '--work-dir',
        str(dist_dir), '--cfg-options', *data_options(tiny_cls_root)
    ],
               env=env)
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    train(single_dir, tiny_cls_root, cfg_options=['train_dataloader.batch_size=8'])
    a = load(dist_dir / 'iter_4.pth')['state_dict']
    b = load(single_dir / 'iter_4.pth')['state_dict']
    for key in b:
        if key.endswith('attn.qkv.bias'):
            # the key bias gets no true gradient (softmax ignores a shift that
            # is the same for all keys), so AdamW turns float noise of ~1e-10
            # into steps of ~lr: compare it loosely, the q and v biases exactly
            c = b[key].numel() // 3
            torch.testing.assert_close(a[key][c:2 * c], b[key][c:2 * c], atol=1e-4, rtol=0, msg=key)
            qv = torch.cat([torch.arange(c), torch.arange(2 * c, 3 * c)])
            a[key], b[key] = a[key][qv], b[key][qv]
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_unknown_cfg_option_is_an_error():
    cfg = Config.fromfile(CFG)
    with pytest.raises(KeyError, match='train_cfg.max_iter'):
        merge_cfg_options_strict(cfg, {'train_cfg.max_iter': 3})
    merge_cfg_options_strict(cfg, {'train_cfg.max_iters': 3, 'param_scheduler.1.end': 3})
    assert cfg.train_cfg.max_iters == 3 and cfg.param_scheduler[1].end == 3


def test_amp_and_missing_files_fail_clearly(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    bad = subprocess.run([sys.executable, 'tools/train.py',
                          str(tmp_path / 'nope.py')],
                         cwd=ROOT,
                         env=env,
                         capture_output=True,
                         text=True)
    assert bad.returncode != 0 and 'Config file not found' in bad.stderr
    if not torch.cuda.is_available():
        amp = subprocess.run(
            [sys.executable, 'tools/train.py', CFG, '--amp', '--work-dir',
             str(tmp_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True)
        from mmaddp.engine.optimizers import cpu_has_fast_bf16
        if cpu_has_fast_bf16():  # bf16 autocast on this CPU (the run then stops at the data)
            assert '--amp: CPUBf16OptimWrapper' in amp.stdout
        else:
            assert amp.returncode != 0 and 'avx512_bf16 or amx_bf16' in amp.stderr


def test_close_launch_destroys_the_process_group(tmp_path):
    """The tools end a launch by destroying its group (MMEngine never does);
    without a group ``close_launch`` does nothing."""
    import torch.distributed as dist

    from mmaddp.utils import close_launch
    close_launch(settle_s=0)  # no group: nothing to do
    dist.init_process_group(
        'gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    total = torch.ones(3)
    dist.all_reduce(total)
    assert dist.is_initialized() and total.tolist() == [1.0, 1.0, 1.0]
    close_launch(settle_s=0)
    assert not dist.is_initialized()


@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'generate.py'])
def test_distributed_tools_close_their_process_group(tool):
    """Every tool that sets up a launch ends ``main`` with ``close_launch()``:
    without it a gloo rank that has finished can abort at interpreter
    shutdown (tools/dist_train.sh on the tiny config: 4 of 55 runs)."""
    tree = ast.parse(open(osp.join(ROOT, 'tools', tool)).read())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'main')
    calls = [
        n.func.id for n in ast.walk(main)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    assert {'prepare_launch', 'setup_distributed'} & set(calls), tool
    last = main.body[-1]
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
    assert getattr(last.value.func, 'id', None) == 'close_launch', tool
