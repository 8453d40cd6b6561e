"""Issue 23: a killed run resumes exactly, checkpoints are written atomically,
a non-finite loss stops the run, bad input gets one line."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from mmaddp.checkpoint import newest_readable_checkpoint
from mmaddp.engine.hooks import AtomicLocalBackend, write_atomically

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls_random.py')
STALL = osp.join(ROOT, 'tests', 'stall')


def data_options(root):
    return [
        f'{k}.dataset.data_root={root}'
        for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def env_for(stall=None, marker=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([STALL, ROOT]), OMP_NUM_THREADS='1')
    env.pop('MMADDP_STALL', None)
    if stall:
        env.update(MMADDP_STALL=stall, MMADDP_STALL_MARKER=str(marker))
    return env


def train_cmd(work_dir, root, procs=1, extra=()):
    if procs == 1:
        head = [sys.executable, 'tools/train.py', CFG]
    else:
        head = ['bash', 'tools/dist_train.sh', CFG, str(procs)]
    return [*head, '--work-dir', str(work_dir), *extra, '--cfg-options', *data_options(root)]


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_to_end(cmd, env):
    env = dict(env, PORT=str(_free_port()), PYTHON=sys.executable)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def run_and_kill(cmd, env, marker, timeout=300):
    """Start ``cmd`` in its own process group, wait for the stall marker of
    rank 0, then SIGKILL the whole group (launcher and workers)."""
    env = dict(env, PORT=str(_free_port()), PYTHON=sys.executable)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True)
    start = time.time()
    while not osp.exists(f'{marker}.0'):
        if proc.poll() is not None:
            raise AssertionError('ended before the stall point:\n' + proc.stdout.read()[-3000:])
        if time.time() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            kill_marked_processes(marker)
            raise AssertionError('never reached the stall point')
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    kill_marked_processes(marker)


def marked_processes(marker):
    """The live processes started with this stall marker in their environment."""
    tag = f'MMADDP_STALL_MARKER={marker}'.encode()
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f'/proc/{entry}/environ', 'rb') as f:
                environ = f.read().split(b'\0')
            with open(f'/proc/{entry}/stat') as f:
                zombie = f.read().rsplit(')', 1)[1].split()[0] == 'Z'
        except OSError:
            continue
        if tag in environ and not zombie:
            found.append(int(entry))
    return found


def kill_marked_processes(marker):
    """SIGKILL every process started with this stall marker: torchrun puts
    its workers in sessions of their own, so killing the launcher's group
    leaves them (and their loader workers) running."""
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_training_state(a_path, b_path):
    a, b = load(a_path), load(b_path)
    assert a['meta']['iter'] == b['meta']['iter'] == 8
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and len(sa) > 0
    for pid in sa:
        for name, value in sa[pid].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[pid][name])), (pid, name)
    assert a['param_schedulers'] == b['param_schedulers']


@pytest.fixture(scope='module')
def reference(tmp_path_factory, tiny_cls_root):
    """Uninterrupted runs, one and two processes."""
    out = {}
    for procs in (1, 2):
        work = tmp_path_factory.mktemp(f'reference_{procs}')
        run_to_end(train_cmd(work, tiny_cls_root, procs), env_for())
        out[procs] = work / 'iter_8.pth'
    return out


@pytest.mark.parametrize('procs', [1, 2])
@pytest.mark.parametrize('when', ['iter:6', 'save:iter_6.pth'])
def test_killed_run_resumes_bit_exactly(tmp_path, tiny_cls_root, reference, procs, when):
    """``kill -9`` during iteration 6, or while iter_6.pth is being written;
    ``--resume`` then finishes with the uninterrupted run's weights, AdamW
    state and schedulers, bit for bit."""
    work, marker = tmp_path / 'work', tmp_path / 'stalled'
    run_and_kill(train_cmd(work, tiny_cls_root, procs), env_for(when, marker), marker)
    time.sleep(0.5)
    assert not marked_processes(marker), 'processes of the killed run are still alive'
    names = sorted(os.listdir(work))
    assert 'iter_6.pth' not in names and 'iter_4.pth' in names
    if when.startswith('save'):  # the kill left the temporary file, never the final name
        assert any(n.startswith('.iter_6.pth.') and n.endswith('.tmp') for n in names)
    log = run_to_end(train_cmd(work, tiny_cls_root, procs, ['--resume']), env_for())
    assert f'--resume: resuming from {work / "iter_4.pth"}' in log
    assert not any(n.endswith('.tmp') for n in os.listdir(work))
    assert_same_training_state(reference[procs], work / 'iter_8.pth')
    # two kept (max_keep_ckpts=2), removed only after the newer one was written
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_6.pth', 'iter_8.pth']


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path, tiny_cls_root, reference):
    work, marker = tmp_path / 'work', tmp_path / 'stalled'
    run_and_kill(train_cmd(work, tiny_cls_root), env_for('iter:7', marker), marker)
    newest = work / 'iter_6.pth'
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])  # as an in-place writer killed mid-save leaves it
    path, skipped = newest_readable_checkpoint(str(work))
    assert path == str(work / 'iter_4.pth')
    assert len(skipped) == 1 and str(newest) in skipped[0] and 'truncated' in skipped[0]
    log = run_to_end(train_cmd(work, tiny_cls_root, extra=['--resume']), env_for())
    assert f'--resume: skipped {newest}' in log
    assert_same_training_state(reference[1], work / 'iter_8.pth')


def test_write_atomically_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / 'last_checkpoint'
    target.write_text('old')

    def refuse(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', refuse)
    with pytest.raises(OSError, match='disk full'):
        AtomicLocalBackend().put(b'new' * 1000, str(target))
    assert target.read_text() == 'old' and os.listdir(tmp_path) == ['last_checkpoint']
    monkeypatch.undo()
    write_atomically(str(target), 'new')
    assert target.read_text() == 'new' and os.listdir(tmp_path) == ['last_checkpoint']


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, tiny_cls_root):
    """lr=1e30 blows the weights up after a few steps: the run stops at the
    first NaN / inf loss, names the iteration, and saves nothing after it."""
    cmd = train_cmd(tmp_path, tiny_cls_root)
    cmd += ['optim_wrapper.optimizer.lr=1e30', 'param_scheduler.0.start_factor=1.0']
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(), capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('train.py: error: non-finite loss at iteration ')
    failed = int(lines[-1].split('iteration ')[1].split(':')[0])
    kept = sorted(int(n[5:-4]) for n in os.listdir(tmp_path) if n.endswith('.pth'))
    assert all(step < failed for step in kept)
    for step in kept:
        state = load(tmp_path / f'iter_{step}.pth')['state_dict']
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# ---------------------------------------------------------------- bad input
def _bad_files(folder, runner_ckpt):
    """Files of the wrong kind, made from a real runner checkpoint."""
    import fractions
    paths = dict(missing=folder / 'missing.pth', garbage=folder / 'garbage.pth')
    paths['garbage'].write_bytes(os.urandom(4096))
    data = runner_ckpt.read_bytes()
    paths['truncated'] = folder / 'truncated.pth'
    paths['truncated'].write_bytes(data[:len(data) // 2])
    state = load(runner_ckpt)['state_dict']
    paths['weights_only'] = folder / 'weights_only.pth'
    torch.save({'state_dict': state}, paths['weights_only'])
    paths['pickled_object'] = folder / 'pickled_object.pth'
    torch.save({
        'state_dict': state,
        'meta': {},
        'lr': fractions.Fraction(1, 3)
    }, paths['pickled_object'])
    paths['tokenizer'] = folder / 'tokenizer.pth'
    torch.save({
        'state_dict': {
            'quantize.embedding.weight': torch.zeros(8, 4)
        },
        'meta': {}
    }, paths['tokenizer'])
    wide = dict(state)  # as a checkpoint of a 48-wide model would have it
    wide['backbone.cls_token'] = torch.zeros(1, 1, 48)
    paths['wrong_width'] = folder / 'wrong_width.pth'
    torch.save({'state_dict': wide, 'meta': {}}, paths['wrong_width'])
    only_truncated = folder / 'only_truncated'
    only_truncated.mkdir()
    (only_truncated / 'iter_2.pth').write_bytes(data[:1000])
    (only_truncated / 'last_checkpoint').write_text(str(only_truncated / 'iter_2.pth'))
    paths['only_truncated'] = only_truncated
    samples = folder / 'samples'
    samples.mkdir()
    (samples / '000000.png').write_bytes(b'\x89PNG\r\n\x1a\n' + os.urandom(64))
    paths['corrupt_samples'] = samples
    return paths


TINY = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')
CLS = osp.join(ROOT, 'configs', 'imagenet', 'addp-vit-nano-p4_1xb64-6000i_demo.py')
GEN = osp.join(ROOT, 'configs', 'addp', 'addp_vit-nano-p4_1xb64-1000i_demo.py')
#: (tool, arguments with {name} for the files above, expected words of the line)
BAD_INPUTS = {
    'train: config missing': ('train', ['{folder}/nope.py'], 'Config file not found'),
    'train: unknown --cfg-options key':
    ('train', [TINY, '--cfg-options', 'train_cfg.max_iter=3'], 'keys not found in the config'),
    'train: --resume missing file':
    ('train', [TINY, '--resume', '{missing}'], 'Checkpoint file not found: {missing}'),
    'train: --resume garbage': ('train', [TINY, '--resume',
                                          '{garbage}'], '{garbage} is not a readable torch file'),
    'train: --resume truncated':
    ('train', [TINY, '--resume', '{truncated}'], '{truncated} is not a readable torch file'),
    'train: --resume weights only': ('train', [TINY, '--resume', '{weights_only}'],
                                     'is not a training checkpoint to resume from'),
    'train: --resume pickled object': ('train', [TINY, '--resume', '{pickled_object}'],
                                       'holds a fractions.Fraction object'),
    'train: --resume, no readable checkpoint':
    ('train', [TINY, '--resume', '--work-dir', '{only_truncated}'], 'no readable checkpoint in'),
    'train: load_from garbage': ('train', [TINY, '--cfg-options', 'load_from={garbage}'],
                                 '{garbage} is not a readable torch file'),
    'test: config missing': ('test', ['{folder}/nope.py', '{garbage}'], 'Config file not found'),
    'test: checkpoint missing': ('test', [TINY, '{missing}'], 'Checkpoint file not found'),
    'test: garbage': ('test', [TINY, '{garbage}'], '{garbage} is not a readable torch file'),
    'test: truncated': ('test', [TINY, '{truncated}'], '{truncated} is not a readable torch file'),
    'test: pickled object': ('test', [TINY,
                                      '{pickled_object}'], 'weights_only=True does not allow'),
    'test: checkpoint of another model': ('test', [TINY, '{tokenizer}'],
                                          'is not a checkpoint of this config'),
    'test: checkpoint of another width': ('test', [TINY, '{wrong_width}'], 'does not fit'),
    'generate: checkpoint missing': ('generate', [GEN, '{missing}', '--out',
                                                  '{folder}/gen'], 'Checkpoint file not found'),
    'generate: garbage': ('generate', [GEN, '{garbage}', '--out',
                                       '{folder}/gen'], 'is not a readable torch file'),
    'eval_fid: samples missing': ('eval_fid', ['{folder}/none',
                                               '{corrupt_samples}'], '{folder}/none'),
    'eval_fid: feature checkpoint missing': ('eval_fid', [
        '{corrupt_samples}', '{corrupt_samples}', '--feature-config', CLS, '--feature-checkpoint',
        '{missing}'
    ], 'not found'),
    'eval_fid: corrupt sample image': ('eval_fid', [
        '{corrupt_samples}', '{corrupt_samples}', '--feature-config', TINY, '--feature-checkpoint',
        '{runner}', '--input-size', '32'
    ], '000000.png'),
    'eval_fid: feature checkpoint of another model': ('eval_fid', [
        '{corrupt_samples}', '{corrupt_samples}', '--feature-config', CLS, '--feature-checkpoint',
        '{tokenizer}'
    ], '{tokenizer}'),
}


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory, reference):
    folder = tmp_path_factory.mktemp('bad')
    return dict(_bad_files(folder, reference[1]), folder=folder, runner=reference[1])


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_gets_one_line(case, bad_files, tmp_path, monkeypatch, capsys):
    """Each bad input ends the tool with status 1 and one line on stderr that
    names the problem (and the file); no traceback, no advice to turn
    weights_only off, nothing left in the work / output dir."""
    from conftest import load_tool
    tool, args, expected = BAD_INPUTS[case]
    names = {k: str(v) for k, v in bad_files.items()}
    args = [a.format(**names) for a in args]
    if '--work-dir' not in args and tool in ('train', 'test'):
        args += ['--work-dir', str(tmp_path / 'work')]
    before = set(os.listdir(bad_files['folder']))
    module = load_tool(f'{tool}.py')
    import logging

    from mmengine.logging import MMLogger
    for logger in MMLogger._instance_dict.values():  # still bound to an earlier case's capture
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr
    monkeypatch.setattr(sys, 'argv', [f'{tool}.py', *args])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        module.exit_on_bad_input(module.main)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1
    assert err and err[-1].startswith(f'{tool}.py: error: '), err[-5:]
    assert expected.format(**names) in err[-1], err[-1]
    assert 'Traceback' not in '\n'.join(err) and 'weights_only=False' not in err[-1]
    assert not (tmp_path / 'work').exists() and set(os.listdir(bad_files['folder'])) == before
    assert not (tmp_path / 'gen').exists()


@pytest.mark.parametrize('skip_bad', [False, True])
def test_an_unreadable_training_image_is_named_or_skipped(tmp_path, tiny_cls_root, skip_bad):
    """A truncated PNG in the training set: the run stops with one line that
    names it, or (``skip_bad=True``) trains on and logs it as skipped."""
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(tiny_cls_root, root)
    bad = root / 'train' / 'class_0' / '001.png'
    bad.write_bytes(bad.read_bytes()[:40])
    cfg = tmp_path / 'skip_bad.py'
    cfg.write_text(f"_base_ = ['{CFG}']\n"
                   f"pipeline = [dict(type='CheckedLoadImageFromFile', skip_bad={skip_bad}), "
                   "dict(type='PackInputs')]\n"
                   "train_dataloader = dict(num_workers=0, dataset=dict(pipeline=pipeline))\n")
    cmd = [
        sys.executable, 'tools/train.py',
        str(cfg), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *data_options(root)
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(), capture_output=True, text=True)
    if skip_bad:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f'skipped unreadable image {bad}' in proc.stdout + proc.stderr
        assert (tmp_path / 'work' / 'iter_8.pth').exists()
    else:
        assert proc.returncode == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith('train.py: error: image ') and str(bad) in last, last
        # checkpoints saved before the bad batch came up are complete
        for name in os.listdir(tmp_path / 'work'):
            if name.endswith('.pth'):
                assert load(tmp_path / 'work' / name)['meta']['iter'] < 8


def test_coco_annotation_classes_must_be_the_configs(tmp_path, demo_root):
    """A COCO file whose category names differ from the config's classes is
    refused (mmdet would drop the unknown category silently); the bundled
    file passes."""
    import json

    from mmdet.datasets import CocoDataset

    from mmaddp.engine.hooks import check_dataset_classes
    classes = tuple(str(i) for i in range(10))
    src = osp.join(demo_root, 'coco', 'annotations', 'instances_val2017.json')
    good = CocoDataset(
        data_root=osp.join(demo_root, 'coco'),
        ann_file=src,
        metainfo=dict(classes=classes),
        data_prefix=dict(img='val2017/'),
        pipeline=[],
        test_mode=True)
    check_dataset_classes(good, 'val')
    ann = json.load(open(src))
    ann['categories'][3]['name'] = 'three'
    renamed = tmp_path / 'renamed.json'
    renamed.write_text(json.dumps(ann))
    bad = CocoDataset(
        data_root=osp.join(demo_root, 'coco'),
        ann_file=str(renamed),
        metainfo=dict(classes=classes),
        data_prefix=dict(img='val2017/'),
        pipeline=[],
        test_mode=True)
    with pytest.raises(
            ValueError,
            match=r"renamed.json has other classes than the config: not "
            r"in the config \['three'\], not in the file \['3'\]"):
        check_dataset_classes(bad, 'val')
