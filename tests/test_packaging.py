"""mmaddp as a user gets it: a wheel from ``python -m build``, installed (not
editable) into a fresh virtual environment, used from outside the checkout."""
import os
import os.path as osp
import shutil
import site
import subprocess
import sys
import zipfile

from conftest import ROOT

CLS_CFG = osp.join(ROOT, 'tests', 'configs', 'tiny_cls.py')


def _run(cmd, cwd, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_wheel_installs_and_runs_outside_the_repository(tmp_path, tiny_cls_root):
    # build from a copy of the tracked files, so the checkout gets no build/ or egg-info
    files = subprocess.run(['git', 'ls-files'],
                           cwd=ROOT,
                           capture_output=True,
                           text=True,
                           check=True).stdout.split()
    src = tmp_path / 'src'
    for rel in files:
        if osp.isfile(osp.join(ROOT, rel)):
            os.makedirs(src / osp.dirname(rel), exist_ok=True)
            shutil.copy2(osp.join(ROOT, rel), src / rel)
    _run([
        sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir',
        str(tmp_path / 'dist')
    ],
         cwd=src)
    wheels = os.listdir(tmp_path / 'dist')
    assert len(wheels) == 1 and wheels[0].startswith('mmaddp-'), wheels
    wheel = str(tmp_path / 'dist' / wheels[0])
    names = zipfile.ZipFile(wheel).namelist()
    assert 'mmaddp/models/diffusion/sampler.py' in names
    assert not any(n.startswith(('tools/', 'tests/', 'configs/', 'demo/')) for n in names), \
        'the wheel carries only the library'

    # a fresh venv; the dependencies come from this environment's site-packages
    # (a .pth entry adds them as a path; their .pth files, the editable
    # mmaddp's among them, are not run from there)
    venv = tmp_path / 'venv'
    _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], cwd=tmp_path)
    python = str(venv / 'bin' / 'python')
    venv_site = _run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                     cwd=tmp_path).stdout.strip()
    with open(osp.join(venv_site, 'deps.pth'), 'w') as f:
        f.write('\n'.join(site.getsitepackages()) + '\n')
    _run([
        sys.executable, '-m', 'pip', '--python', python, 'install', '--no-deps', '--no-index',
        '--disable-pip-version-check', '-q', wheel
    ],
         cwd=tmp_path)

    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    script = ('import mmaddp, torch\n'
              'from mmengine.config import Config\n'
              'from mmengine.registry import init_default_scope\n'
              'from mmaddp.registry import MODELS\n'
              f'cfg = Config.fromfile({CLS_CFG!r})\n'
              'init_default_scope("mmpretrain")\n'
              'torch.manual_seed(0)\n'
              'model = MODELS.build(cfg.model)\n'
              'model.init_weights()\n'
              'torch.save({"state_dict": model.state_dict()}, "cls.pth")\n'
              'print("RESULT", mmaddp.__file__, sum(p.numel() for p in model.parameters()))\n')
    lines = _run([python, '-c', script], cwd=outside).stdout.splitlines()
    out = next(ln for ln in lines if ln.startswith('RESULT ')).split()[1:]
    assert out[0].startswith(venv_site), f'mmaddp imported from {out[0]}, not the wheel'
    assert int(out[1]) > 10000

    # one tool from outside the repository, importing the installed package
    test = _run([
        python,
        osp.join(ROOT, 'tools', 'test.py'), CLS_CFG, 'cls.pth', '--work-dir', 'work',
        '--cfg-options', f'test_dataloader.dataset.data_root={tiny_cls_root}'
    ],
                cwd=outside)
    assert 'accuracy/top1' in test.stdout + test.stderr
    assert osp.isfile(outside / 'work' / 'test_metrics.json')
