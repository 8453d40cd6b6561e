"""The end-to-end demo (tools/run_demo.py) and its resumable stages."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from demo.stages import MARKER, prepare_config, run_stage, scale_schedule

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_stage_runs_once_and_redoes_an_interrupted_one(tmp_path):
    calls = []

    def work(stage_dir):
        calls.append(stage_dir)
        with open(osp.join(stage_dir, 'model.pth'), 'w') as f:
            f.write('complete')
        return dict(value=len(calls))

    first = run_stage(str(tmp_path), 'a', work, log=lambda m: None)
    again = run_stage(str(tmp_path), 'a', work, log=lambda m: None)
    assert (first['results'], first['skipped']) == ({'value': 1}, False)
    assert (again['results'], again['skipped']) == ({'value': 1}, True)
    assert len(calls) == 1

    # an interrupted stage: a half-written file, no marker -> wiped and redone
    os.makedirs(tmp_path / 'b')
    (tmp_path / 'b' / 'model.pth').write_text('half')
    seen = []

    def check_clean(stage_dir):
        seen.append(sorted(os.listdir(stage_dir)))
        return {}

    run_stage(str(tmp_path), 'b', check_clean, log=lambda m: None)
    assert seen == [[]]
    assert (tmp_path / 'b' / MARKER).is_file()

    # a failing stage leaves no marker
    def fail(stage_dir):
        raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        run_stage(str(tmp_path), 'c', fail, log=lambda m: None)
    assert not (tmp_path / 'c' / MARKER).exists()


def test_a_moved_run_folder_reads_its_own_files(tmp_path):
    """Markers keep paths inside the run folder relative to it: after the
    folder is moved, a reused stage points into the new place, not the old."""
    old = tmp_path / 'old'

    def work(stage_dir):
        ckpt = osp.join(stage_dir, 'iter_10.pth')
        open(ckpt, 'w').write('weights')
        return dict(checkpoint=ckpt, folders=dict(a=stage_dir), data='/elsewhere/data', n=3)

    first = run_stage(str(old), 'a', work, log=lambda m: None)
    assert first['results']['checkpoint'] == str(old / 'a' / 'iter_10.pth')
    stored = json.loads((old / 'a' / MARKER).read_text())['results']
    assert stored == dict(
        checkpoint='$WORK_DIR/a/iter_10.pth',
        folders=dict(a='$WORK_DIR/a'),
        data='/elsewhere/data',
        n=3)
    os.rename(old, tmp_path / 'new')
    again = run_stage(str(tmp_path / 'new'), 'a', work, log=lambda m: None)
    assert again['skipped']
    assert again['results']['checkpoint'] == str(tmp_path / 'new' / 'a' / 'iter_10.pth')
    assert again['results']['folders'] == dict(a=str(tmp_path / 'new' / 'a'))
    assert again['results']['data'] == '/elsewhere/data'


def test_schedule_scaling_and_flat_stage_config(tmp_path):
    src = osp.join(ROOT, 'configs', 'mask_rcnn',
                   'mask-rcnn_addp-vit-nano-p4_simple-fpn_1xb8-500i_demo-64px.py')
    dst = prepare_config(
        src,
        str(tmp_path / 'config.py'), {'model.backbone.init_cfg.checkpoint': 'x.pth'},
        max_iters=150)
    cfg = Config.fromfile(dst)
    assert cfg.train_cfg.max_iters == 150 and cfg.train_cfg.val_interval == 150
    assert cfg.param_scheduler[1].milestones == [120, 140]  # 400, 465 scaled by 150 / 500
    assert cfg.param_scheduler[0].end == 12  # 40 * 150 / 500
    assert cfg.model.backbone.init_cfg.checkpoint == 'x.pth'
    assert '_delete_' not in open(dst).read()
    with pytest.raises(KeyError, match='not found'):
        prepare_config(src, str(tmp_path / 'bad.py'), {'model.backbone.no_such_key': 1})
    cfg = Config(dict(train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=2)))
    with pytest.raises(ValueError, match='IterBasedTrainLoop'):
        scale_schedule(cfg, 10)


def test_quick_demo_end_to_end(tmp_path, demo_root):
    work = tmp_path / 'demo'
    cmd = [
        sys.executable, 'tools/run_demo.py', '--quick', '--work-dir',
        str(work), '--data-root', demo_root, '--second-seed', 'always'
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '[cls] started' in proc.stdout and 'Iter(train)' in proc.stdout  # progress shown

    report = (work / 'report.md').read_text()
    for heading in ('## Pretraining', '## Generation', '## Representation',
                    '### Second seed (seed 1)', '## Pixel versus token input', '## Targets',
                    '## Figures', '## Wall time per stage'):
        assert heading in report
    record = json.loads((work / 'metrics.json').read_text())
    expected = {
        'tokenizer/psnr', 'tokenizer/code_usage', 'tokenizer/recon_top1',
        'token_predictor/accuracy', 'token_predictor/nll', 'token_predictor/marginal_nll',
        'token_predictor/information', 'addp/loss_first', 'addp/loss_last', 'probe/top1',
        'probe_random/top1', 'cls/top1', 'cls_random/top1', 'cls_few/top1', 'cls_few_random/top1',
        'det/bbox_AP50', 'det/segm_AP50', 'det_random/bbox_AP50', 'det_random/segm_AP50',
        'seg/mIoU', 'seg_random/mIoU', 'cls_token/top1', 'det_token/bbox_AP50',
        'det_token/segm_AP50', 'seg_token/mIoU', 'addp_seed1/loss_last', 'probe_seed1/top1',
        'probe_random_seed1/top1', 'cls_few_seed1/top1', 'cls_few_random_seed1/top1'
    }
    expected |= {
        f'generation/{images}/{key}'
        for images in ('addp', 'predictor', 'recon', 'start', 'noise', 'real')
        for key in ('fid', 'inception_score', 'confident_share')
    }
    assert expected <= set(record['metrics'])
    assert all(math.isfinite(v) for v in record['metrics'].values())
    assert set(record['bars']) == {'cls/top1', 'seg/mIoU', 'det/bbox_AP50', 'det/segm_AP50'}
    assert len(record['targets']) == 9 and all('met' in t for t in record['targets'])
    repeated = {t['metric'] for t in record['targets'] if 'second_seed' in t}
    assert repeated == {'probe/top1', 'cls_few/top1'}
    # the second seed's ADDP is another run: its own checkpoint, its own loss curve
    seed1 = json.loads((work / 'addp_seed1' / MARKER).read_text())['results']
    assert seed1['ran'] and seed1['checkpoint'].startswith('$WORK_DIR/addp_seed1/')
    for stage in ('addp_seed1', 'cls_few_random_seed1'):
        assert Config.fromfile(work / stage / 'config.py').randomness.seed == 1
    assert record['cpu_flags'] is not None
    for name in record['figures'].values():
        assert (work / name).stat().st_size > 1000  # real PNGs
        assert f']({name})' in report

    # interrupted later: a stage without its marker and with a half-written
    # checkpoint is redone; finished stages are not
    seg = work / 'seg'
    os.remove(seg / MARKER)
    (seg / 'iter_10.pth').write_bytes(b'half-written')
    before = {s: (work / s / MARKER).stat().st_mtime for s in ('tokenizer', 'addp', 'det')}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '[seg] found an unfinished run' in proc.stdout
    assert '[tokenizer] done before' in proc.stdout
    after = {s: (work / s / MARKER).stat().st_mtime for s in before}
    assert after == before
    assert (seg / MARKER).is_file()
    assert json.loads((work / 'metrics.json').read_text())['metrics'].keys() == \
        record['metrics'].keys()


def _fake_stages(monkeypatch, run_demo, log, fail=None, seconds=0.05):
    """Replace every stage function by one that records its start / end."""
    import threading
    import time
    lock = threading.Lock()

    def fns(self):

        def make(name):

            def fn(stage_dir):
                with lock:
                    log[name] = [time.monotonic(), None]
                time.sleep(seconds)
                if name == fail:
                    raise RuntimeError('boom')
                with lock:
                    log[name][1] = time.monotonic()
                return {}

            return fn

        return {name: make(name) for name in run_demo.PRIORITY}

    monkeypatch.setattr(run_demo.Demo, 'stage_fns', fns)
    monkeypatch.setattr(run_demo.Demo, 'report', lambda self: None)


def test_failed_stage_starts_no_further_ones(tmp_path, monkeypatch):
    """A failing stage: nothing that depends on it starts, nothing else is
    started afterwards, and the error reaches the caller."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import run_demo
    log = {}
    _fake_stages(monkeypatch, run_demo, log, fail='token_predictor')
    demo = run_demo.Demo(str(tmp_path / 'work'), str(tmp_path / 'data'), 'quick', jobs=1)
    with pytest.raises(RuntimeError, match='boom'):
        demo.run()
    assert list(log) == ['data', 'tokenizer', 'token_predictor']  # PRIORITY order, jobs=1
    assert not (tmp_path / 'work' / 'token_predictor' / MARKER).exists()
    assert (tmp_path / 'work' / 'tokenizer' / MARKER).exists()


@pytest.mark.parametrize('jobs', [1, 2, 3])
def test_stages_start_after_what_they_need(tmp_path, monkeypatch, jobs):
    """Every stage starts only after the stages it reads have finished; with
    two or more jobs the random-weight baselines overlap the pretraining."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import run_demo
    log = {}
    _fake_stages(monkeypatch, run_demo, log)
    run_demo.Demo(str(tmp_path / 'work'), str(tmp_path / 'data'), 'quick', jobs=jobs).run()
    assert set(log) == set(run_demo.PRIORITY)
    for name, deps in run_demo.DEPENDS.items():
        for dep in deps:
            assert log[name][0] >= log[dep][1], (name, dep)
    assert run_demo.DEPENDS['seg'] == ('addp', )  # UperNet starts from ADDP itself
    assert run_demo.DEPENDS['seg_random'] == ('data', )
    if jobs > 1:  # a random-weight baseline runs beside the pretraining
        assert log['probe_random'][0] < log['addp'][1]
    start, end = log['tokenizer']  # EXCLUSIVE: runs alone, with every core
    assert all(e <= start or s >= end for n, (s, e) in log.items() if n != 'tokenizer')
    # a second run reuses every finished stage
    log.clear()
    run_demo.Demo(str(tmp_path / 'work'), str(tmp_path / 'data'), 'quick', jobs=jobs).run()
    assert log == {}


def test_targets_compare_against_their_references():
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import run_demo
    m = {key: 0.0 for row in run_demo.TARGETS for key in (row[0], row[2]) if key}
    m.update({
        'tokenizer/psnr': 22.5,
        'tokenizer/recon_top1': 86.0,
        'cls/top1': 92.0,
        'generation/addp/fid': 10.0,
        'generation/noise/fid': 30.0,
        'generation/predictor/fid': 9.0,
        'probe/top1': 60.0,
        'probe_random/top1': 30.0
    })
    rows = {
        r['metric'] + '|' + str(r['reference']): r
        for r in run_demo.check_targets(m, dict(cls_val=500))
    }
    assert rows['tokenizer/psnr|None']['met']
    assert not rows['tokenizer/recon_top1|cls/top1']['met']  # 6 points below
    assert rows['generation/addp/fid|generation/noise/fid']['met']  # 10 <= 15
    assert not rows['generation/addp/fid|generation/predictor/fid']['met']  # 10 > 9
    probe = rows['probe/top1|probe_random/top1']
    assert probe['met'] and probe['margin_beyond_2se']
    # 2 SE of a difference of two 500-image accuracies at 60 % and 30 %
    assert probe['two_se'] == pytest.approx(200 * math.sqrt((.6 * .4 + .3 * .7) / 500), abs=0.01)


def test_second_seed_where_a_margin_is_within_two_standard_errors(tmp_path, monkeypatch):
    """``auto`` repeats a margin only within 2 SE; the targets then hold
    both seeds, their mean margin, and are met only when both seeds meet them."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import run_demo
    monkeypatch.setattr(run_demo.Demo, 'counts', lambda self: dict(cls_val=500))
    first = dict(probe=34.4, probe_random=29.2, cls_few=70.0, cls_few_random=40.0)

    def demo(mode):
        d = run_demo.Demo(str(tmp_path / mode), str(tmp_path / 'data'), 'quick', second_seed=mode)
        d.records = {k: dict(results=dict(top1=v)) for k, v in first.items()}
        return d

    # +5.2 at 34.4 vs 29.2 over 500 images is inside 2 SE (5.9); +30 is not
    assert demo('auto').margins_to_repeat() == {'probe/top1': True, 'cls_few/top1': False}
    assert demo('always').margins_to_repeat() == {'probe/top1': True, 'cls_few/top1': True}
    never = demo('never')
    assert never.train_addp_second_seed(str(tmp_path)) == dict(
        ran=False, repeat={
            'probe/top1': False,
            'cls_few/top1': False
        })
    never.records['addp_seed1'] = dict(results=never.train_addp_second_seed(str(tmp_path)))
    assert never.repeat_with_second_seed(str(tmp_path), 'probe_random_seed1') == dict(ran=False)
    with pytest.raises(ValueError, match='second_seed must be one of'):
        run_demo.Demo(str(tmp_path / 'x'), str(tmp_path / 'data'), 'quick', second_seed='twice')

    m = {key: 0.0 for row in run_demo.TARGETS for key in (row[0], row[2]) if key}
    m.update({
        'probe/top1': 52.0,
        'probe_random/top1': 30.0,
        'probe_seed1/top1': 45.0,
        'probe_random_seed1/top1': 31.0
    })
    rows = {r['metric']: r for r in run_demo.check_targets(m, dict(cls_val=500))}
    probe = rows['probe/top1']
    assert probe['second_seed']['value'] == 45.0 and not probe['second_seed']['met']  # +14 < 20
    assert probe['mean_margin'] == pytest.approx(18.0)
    assert not probe['met']  # seed 0 meets it (+22), seed 1 does not
    assert 'second_seed' not in rows['cls_few/top1']  # no seed-1 numbers for it
    report = run_demo.render_second_seed(m, list(rows.values()))
    assert '| linear probe | 1 | 45.00 | 31.00 | +14.00 |' in '\n'.join(report)
    assert '| linear probe | mean | 48.50 | 30.50 | +18.00 | - |' in report


def test_stage_processes_get_the_malloc_settings_unless_the_shell_has_them(tmp_path, monkeypatch):
    from demo.stages import MALLOC_ENV, run_tool

    show = [
        '-c', 'import os; print("ENV", os.environ.get("MALLOC_MMAP_THRESHOLD_"), '
        'os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"))'
    ]
    for key in (*MALLOC_ENV, 'OMP_NUM_THREADS'):
        monkeypatch.delenv(key, raising=False)
    log = tmp_path / 'a.log'
    run_tool(show, str(log), env=dict(OMP_NUM_THREADS='1'))
    assert f"ENV {32 * 2**20} {16 * 2**30} 1" in log.read_text()  # glibc's largest mmap threshold
    monkeypatch.setenv('MALLOC_MMAP_THRESHOLD_', '131072')  # the user's choice is kept
    log = tmp_path / 'b.log'
    run_tool(show, str(log))
    assert f"ENV 131072 {16 * 2**30} None" in log.read_text()


STOP_SCRIPT = r'''
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
from demo.stages import run_tool, tools_stopped_on_failure
log, pid_dir, how = sys.argv[1:]


def sleeper(name):  # a stage process that runs for two minutes
    path = os.path.join(pid_dir, name)
    return ['-c', f'import os, time; open({path!r}, "w").write(str(os.getpid())); time.sleep(120)']


with tools_stopped_on_failure():
    ThreadPoolExecutor(1).submit(run_tool, sleeper('side'), log)  # like the code ids
    if how == 'fail':
        while not os.path.exists(os.path.join(pid_dir, 'side')):
            time.sleep(0.05)
        raise RuntimeError('the pretraining stage failed')
    run_tool(sleeper('main'), log)  # like the token predictor
'''


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f'/proc/{pid}/stat') as f:
        return f.read().split(')')[-1].split()[0] != 'Z'


@pytest.mark.parametrize('how', ['fail', 'sigterm'])
def test_a_failed_or_terminated_demo_stops_its_stage_processes(tmp_path, how):
    """When the main thread fails, or the script gets SIGTERM, the stage
    processes still running (the code-id encoding runs beside the
    pretraining) are stopped at once: the script exits promptly, leaving no
    process behind."""
    import signal
    import time
    names = ['side'] if how == 'fail' else ['side', 'main']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, osp.join(ROOT, 'tools')]))
    proc = subprocess.Popen(
        [sys.executable, '-c', STOP_SCRIPT,
         str(tmp_path / 'stage.log'),
         str(tmp_path), how],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not all((tmp_path / n).exists() and (tmp_path / n).read_text() for n in names):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    children = [int((tmp_path / n).read_text()) for n in names]
    start = time.monotonic()
    if how == 'sigterm':
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert time.monotonic() - start < 30  # not the children's 120 s
    if how == 'fail':
        assert proc.returncode == 1 and 'the pretraining stage failed' in out
    else:
        assert proc.returncode == 128 + signal.SIGTERM
    assert not any(_alive(pid) for pid in children)
