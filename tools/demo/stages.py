"""Resumable stages for multi-step runs (the demo, the pixel-vs-token study).

A stage owns one folder. It counts as done only when its ``DONE.json`` marker
exists; the marker is written atomically after the stage's work succeeded and
holds its results and wall time, with paths inside the run's folder written
relative to it (``$WORK_DIR/...``), so a run folder that was moved or copied
reads its own checkpoints, not those of the folder it came from. A stage folder without a marker (an
interrupted run) is wiped and redone, so a half-written checkpoint is never
used. MMEngine has no notion of a pipeline of runs, so this is written here.
"""
import contextlib
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

MARKER = 'DONE.json'
#: how a marker writes the run folder at the start of a path
WORK_PREFIX = '$WORK_DIR'
# glibc's malloc hands freed blocks over 128 KiB back to the system and then
# faults the pages in again at the next allocation, every iteration; with
# higher thresholds a stage's process keeps its activations' memory (measured
# side by side: code-id encoding 29 -> 23 s per view, tiny UperNet 0.318 ->
# 0.290 s per iteration). Every process ``run_tool`` starts gets them, unless
# the shell sets these variables itself.
MALLOC_ENV = dict(MALLOC_MMAP_THRESHOLD_=str(32 * 2**20), MALLOC_TRIM_THRESHOLD_=str(16 * 2**30))
#: lines a tool prints to report progress (shown by ``run_tool``'s echo, as
#: MMEngine's iteration lines are)
PROGRESS = 'progress: '
#: mmengine's ``Config.fromfile`` is not thread-safe (its pkg_resources lookups
#: raise TypeError when two threads parse configs at once)
_CONFIG_LOCK = threading.Lock()
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: the processes ``run_tool`` has started and that are still running
_RUNNING = set()
_RUNNING_LOCK = threading.Lock()


def write_json_atomic(path: str, obj) -> None:
    """Write JSON through a temporary file and a rename."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _map_strings(obj, fn):
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_strings(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_map_strings(v, fn) for v in obj]
    return obj


def portable_paths(results, work_root: str):
    """``results`` with every path inside ``work_root`` written from
    ``$WORK_DIR`` (what a marker stores)."""
    root = osp.abspath(work_root)
    return _map_strings(
        results, lambda v: WORK_PREFIX + v[len(root):]
        if v == root or v.startswith(root + os.sep) else v)


def resolved_paths(results, work_root: str):
    """The inverse of :func:`portable_paths` for the run folder the marker
    is read from now."""
    root = osp.abspath(work_root)
    return _map_strings(
        results, lambda v: root + v[len(WORK_PREFIX):]
        if v == WORK_PREFIX or v.startswith(WORK_PREFIX + '/') else v)


def run_stage(work_root: str,
              name: str,
              fn: Callable[[str], Dict],
              log: Callable[[str], None] = print) -> Dict:
    """Run ``fn(stage_dir)`` unless ``work_root/name`` is already done.

    Returns the stage's record: ``dict(results=..., seconds=..., skipped=bool)``.
    """
    stage_dir = osp.join(work_root, name)
    marker = osp.join(stage_dir, MARKER)
    if osp.isfile(marker):
        with open(marker) as f:
            record = json.load(f)
        log(f'[{name}] done before ({record["seconds"]:.0f} s), skipped')
        return dict(record, results=resolved_paths(record['results'], work_root), skipped=True)
    if osp.isdir(stage_dir):
        log(f'[{name}] found an unfinished run: removing {stage_dir} and starting over')
        shutil.rmtree(stage_dir)
    os.makedirs(stage_dir)
    log(f'[{name}] started')
    start = time.time()
    results = fn(stage_dir)
    record = dict(results=results, seconds=round(time.time() - start, 1))
    write_json_atomic(marker, dict(record, results=portable_paths(results, work_root)))
    log(f'[{name}] finished in {record["seconds"]:.0f} s: {results}')
    return dict(record, skipped=False)


def run_tool(args: List[str],
             log_file: str,
             env: Optional[dict] = None,
             echo: Callable[[str], None] = None) -> None:
    """Run ``python ARGS`` from the repository root, appending its output to
    ``log_file`` and passing MMEngine's iteration log lines and ``PROGRESS``
    lines to ``echo``; the process gets ``MALLOC_ENV`` (unless the shell
    sets it) and ``env``. Raise with the log's tail when it fails."""
    env = {**MALLOC_ENV, **os.environ, **(env or {})}
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.setdefault('PYTHONUNBUFFERED', '1')
    with open(log_file, 'a') as f:
        f.write(f'$ python {" ".join(args)}\n')
        f.flush()
        proc = subprocess.Popen([sys.executable, *args],
                                cwd=ROOT,
                                env=env,
                                text=True,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        with _RUNNING_LOCK:
            _RUNNING.add(proc)
        try:
            for line in proc.stdout:
                f.write(line)
                if echo is None:
                    continue
                if ' - mmengine - INFO - Iter(' in line:
                    echo('    ' + line.split(' - mmengine - INFO - ', 1)[1].strip()[:150])
                elif line.startswith(PROGRESS):
                    echo('    ' + line[len(PROGRESS):].strip()[:150])
            proc.wait()
        except BaseException:  # this thread was interrupted (Ctrl-C, SIGTERM)
            _stop([proc])
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(proc)
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f'{" ".join(args[:2])} failed (exit {proc.returncode}); '
                           f'log {log_file}:\n{tail}')


def _stop(procs, timeout: float = 10.) -> None:
    """SIGTERM to the processes, SIGKILL to those alive ``timeout`` s later.
    Their ``run_tool`` calls then raise, and their stages stay unfinished."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def tools_stopped_on_failure():
    """For a script's main thread: when the body raises (a failed stage,
    Ctrl-C, or SIGTERM, which it turns into ``SystemExit``), the stage
    processes still running elsewhere (e.g. the code-id encoding beside the
    pretraining) are stopped instead of being left to finish or waited for."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    except BaseException:
        with _RUNNING_LOCK:
            running = list(_RUNNING)
        _stop(running)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint named by MMEngine's ``last_checkpoint`` file."""
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        raise FileNotFoundError(f'No last_checkpoint in {work_dir}: did training finish?')
    with open(path) as f:
        ckpt = f.read().strip()
    if not osp.isfile(ckpt):
        raise FileNotFoundError(f'{path} names {ckpt}, which does not exist')
    return ckpt


def train_and_test(config: str,
                   work_dir: str,
                   options: List[str] = (),
                   test: bool = True,
                   echo: Callable[[str], None] = None,
                   env: Optional[dict] = None) -> Dict:
    """``tools/train.py`` (with ``--test``: the final weights are tested in
    the same process, as ``tools/test.py`` would test the last checkpoint,
    without a second start-up of the OpenMMLab stack, ~10 s of CPU here)
    (``env``: extra environment variables, e.g. thread counts).

    Returns ``dict(checkpoint=..., metrics=...)`` (metrics from
    ``test_metrics.json``, empty when ``test`` is False).
    """
    log_file = osp.join(work_dir, 'run.log')
    extra = ['--cfg-options', *options] if options else []
    # no validation pass before the test of the final weights
    run_tool([
        'tools/train.py', config, '--work-dir', work_dir, '--no-validate',
        *(['--test'] if test else []), *extra
    ],
             log_file,
             env=env,
             echo=echo)
    ckpt = last_checkpoint(work_dir)
    metrics = {}
    if test:
        with open(osp.join(work_dir, 'test_metrics.json')) as f:
            metrics = json.load(f)['metrics']
    return dict(checkpoint=ckpt, metrics=metrics)


def scale_schedule(cfg, max_iters: int) -> None:
    """Shorten (or lengthen) an iteration-based config to ``max_iters``:
    scheduler boundaries and milestones scale proportionally, validation and
    the checkpoint happen at the end, the logger logs about 5 times."""
    old = cfg.train_cfg.get('max_iters')
    if cfg.train_cfg.get('type') != 'IterBasedTrainLoop' or not old:
        raise ValueError('scale_schedule needs an IterBasedTrainLoop config with max_iters')
    factor = max_iters / old

    def scaled(value):
        return max(1, min(max_iters, int(round(value * factor))))

    cfg.train_cfg.max_iters = max_iters
    if 'val_interval' in cfg.train_cfg:
        cfg.train_cfg.val_interval = max_iters
    schedulers = cfg.get('param_scheduler') or []
    for sched in schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]:
        if sched.get('begin'):
            sched.begin = scaled(sched.begin)
        if 'end' in sched:
            sched.end = scaled(sched.end)
        if 'milestones' in sched:
            sched.milestones = [scaled(m) for m in sched.milestones]
        if 'T_max' in sched:
            sched.T_max = scaled(sched.T_max)
    hooks = cfg.get('default_hooks', {})
    if 'checkpoint' in hooks:
        hooks.checkpoint.interval = max_iters
    if 'logger' in hooks:
        hooks.logger.interval = max(1, min(hooks.logger.interval, max_iters // 5))


def _drop_delete_keys(node):
    if isinstance(node, dict):
        return {k: _drop_delete_keys(v) for k, v in node.items() if k != '_delete_'}
    if isinstance(node, (list, tuple)):
        return type(node)(_drop_delete_keys(v) for v in node)
    return node


def load_config(path: str):
    """``Config.fromfile``, safe to call from several threads."""
    from mmengine.config import Config
    with _CONFIG_LOCK:
        return Config.fromfile(path)


def prepare_config(src: str,
                   dst: str,
                   options: Optional[dict] = None,
                   max_iters: Optional[int] = None) -> str:
    """Write ``src`` with ``options`` merged (unknown keys refused) and,
    optionally, its schedule scaled to ``max_iters`` as one flat config file
    ``dst``: the exact config of a stage, kept in its folder."""
    from mmengine.config import Config

    from mmaddp.utils.config import merge_cfg_options_strict
    cfg = load_config(src)
    if options:
        merge_cfg_options_strict(cfg, options)
    if max_iters is not None:
        scale_schedule(cfg, max_iters)
    flat = Config(_drop_delete_keys(cfg.to_dict()))  # merged already: no base left
    flat.dump(dst)
    return dst
