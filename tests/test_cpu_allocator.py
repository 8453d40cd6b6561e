"""Host memory kept for reuse on CPU runs (mmaddp/utils/cpu_allocator.py).

The setting is process-wide, so every check that applies it runs in a
subprocess of its own and the test process keeps glibc's defaults."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from mmaddp.utils import cpu_allocator

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')
glibc = pytest.mark.skipif(
    not sys.platform.startswith('linux') or cpu_allocator.platform.libc_ver()[0] != 'glibc',
    reason='the setting is glibc-only')

#: bytes of the tensor that is freed, and of the one allocated after it: a
#: little smaller, so that it fits the freed block even when glibc has placed
#: a small block after it (an aligned request of the same size asks for a few
#: bytes more than the freed block holds and would come from fresh heap)
FREED, NEXT = 2**27, 2**27 - 2**16
#: allocate and touch FREED bytes, free them, allocate and touch NEXT bytes;
#: print the minor page faults of the second allocation and what was set
FAULTS = rf'''
import resource, torch
from mmaddp.utils import keep_freed_host_memory
note = keep_freed_host_memory()
x = torch.empty({FREED}, dtype=torch.uint8); x.fill_(1); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = torch.empty({NEXT}, dtype=torch.uint8); y.fill_(2)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, note is not None)
'''


def run_python(code, **env):
    return subprocess.run([sys.executable, '-c', code],
                          cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env),
                          capture_output=True,
                          text=True,
                          timeout=300)


@glibc
def test_kept_memory_serves_the_next_large_tensor_without_page_faults():
    pages = NEXT // os.sysconf('SC_PAGE_SIZE')
    faults = {}
    for choice in ('keep', 'default'):
        proc = run_python(FAULTS, MMADDP_CPU_ALLOCATOR=choice, LD_PRELOAD='')
        assert proc.returncode == 0, proc.stderr[-2000:]
        count, applied = proc.stdout.split()
        faults[choice] = int(count)
        assert applied == str(choice == 'keep')
    # glibc's defaults map a block of this size afresh: every page faults again
    assert faults['default'] >= 0.9 * pages, faults
    # kept: the freed block is reused, its pages already there
    assert faults['keep'] <= 0.05 * pages, faults


def test_nothing_is_set_under_another_allocator_or_libc(monkeypatch):
    monkeypatch.setattr(cpu_allocator, '_applied', None)
    monkeypatch.delenv(cpu_allocator.ENV, raising=False)
    monkeypatch.setenv('LD_PRELOAD', '/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4')
    assert cpu_allocator.keep_freed_host_memory() is None
    monkeypatch.setenv('LD_PRELOAD', '')
    monkeypatch.setattr(cpu_allocator.platform, 'libc_ver', lambda: ('musl', '1.2'))
    assert cpu_allocator.keep_freed_host_memory() is None
    assert cpu_allocator._applied is None  # mallopt was never called
    monkeypatch.setenv(cpu_allocator.ENV, 'tcmalloc')
    with pytest.raises(ValueError, match="MMADDP_CPU_ALLOCATOR must be 'keep' or 'default'"):
        cpu_allocator.keep_freed_host_memory()


@glibc
def test_train_tool_keeps_host_memory_on_cpu_and_names_a_bad_setting(tmp_path, tiny_cls_root):
    options = [
        f'{k}.dataset.data_root={tiny_cls_root}'
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ] + ['train_cfg.max_iters=1', 'train_cfg.val_interval=1']
    line = 'host memory: glibc keeps freed blocks for reuse'
    for choice, printed in (('keep', True), ('default', False)):
        cmd = [
            sys.executable, 'tools/train.py', CFG, '--work-dir',
            str(tmp_path / choice), '--cfg-options', *options
        ]
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=dict(os.environ, MMADDP_CPU_ALLOCATOR=choice, CUDA_VISIBLE_DEVICES=''),
            capture_output=True,
            text=True,
            timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (line in proc.stdout) == printed
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, MMADDP_CPU_ALLOCATOR='jemalloc', CUDA_VISIBLE_DEVICES=''),
        capture_output=True,
        text=True,
        timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert last == ("train.py: error: MMADDP_CPU_ALLOCATOR must be 'keep' or 'default', "
                    "got 'jemalloc'"), last
