"""ADDP end to end on the bundled data, on CPU: one command, one report.

    python tools/run_demo.py [--work-dir work_dirs/demo] [--quick]

Stages (each reuses the previous stages' checkpoints and is skipped when its
folder holds a DONE.json; an interrupted stage is wiped and redone):
data -> tokenizer -> token_predictor -> addp -> generation -> the six
fine-tuning runs (cls, det, seg, each reading pixels and reading code ids:
cls_token, det_token, seg_token; ``--jobs`` at a time) -> fid -> report
(WORK_DIR/report.md, WORK_DIR/metrics.json, figures). cls and det start from
the ADDP checkpoint; seg from the cls run's checkpoint (intermediate
fine-tuning, see the UperNet config), seg_token from cls_token's.
cls_token_ids (the code ids of cls_token's augmented training views, so that
the run does not encode every batch) needs only the tokenizer: with
``--jobs`` > 1 it runs on one core while the token predictor and ADDP train
on the others.
``--quick`` runs a few iterations per stage (for tests): the plumbing, not
the numbers.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmaddp.utils.stages import (MARKER, load_config, prepare_config, run_stage,  # noqa: E402
                                 run_tool, tools_stopped_on_failure, train_and_test,
                                 write_json_atomic)

CONFIGS = dict(
    tokenizer='configs/vq_tokenizer/vq-tokenizer-tiny_1xb64-1200i_demo.py',
    token_predictor='configs/token_predictor/token-predictor-tiny_1xb64-1200i_demo.py',
    addp='configs/addp/addp_vit-tiny-p8_1xb64-2000i_demo.py',
    cls='configs/imagenet/addp-vit-tiny-p8_1xb64-8000i_demo.py',
    det='configs/mask_rcnn/mask-rcnn_addp-vit-tiny-p8_simple-fpn_1xb8-500i_demo.py',
    seg='configs/upernet/upernet_addp-vit-tiny-p8_1xb8-1400i_demo-96x96.py',
)
#: iterations per stage: the full demo (None: the config's own) and --quick
ITERS = dict(
    # the pretraining configs' own schedules are longer; at this scale the
    # demo's are enough: the predictor was as accurate after 400 iterations as
    # after 600 (5.51 % vs 5.30 %), ADDP's loss flat after ~300 (4.435 after
    # 600, 4.424 after 800), and fine-tuning from ADDP no better than from
    # random weights (classification 90.8 from ADDP 600, 91.6 from ADDP 800,
    # 91.2 from random weights). Downstream: the configs' own schedules.
    full=dict(tokenizer=400, token_predictor=400, addp=600, cls=None, det=None, seg=None),
    quick=dict(tokenizer=20, token_predictor=20, addp=20, cls=20, det=10, seg=10),
)
NUM_SAMPLES = dict(full=256, quick=16)
#: the order in which free cores take the six fine-tuning runs ((task, reads
#: code ids)): the two cls -> seg chains are the longest paths, so both cls
#: runs go early; cls_token third, so that its code ids (computed during
#: pretraining) have one more run's time to finish; every cls run is ahead
#: of the seg run that waits for it, so a waiting run never blocks the run it
#: waits for
RUN_ORDER = (('cls', False), ('det', True), ('cls', True), ('seg', False), ('det', False),
             ('seg', True))
#: the bars of the issues (metric key in metrics.json, minimum)
BARS = {'cls/top1': 90.0, 'seg/mIoU': 50.0, 'det/bbox_AP50': 50.0, 'det/segm_AP50': 40.0}


class Demo:

    def __init__(self, work_dir: str, data_root: str, mode: str, jobs: int = 2):
        self.work = osp.abspath(work_dir)
        self.data = osp.abspath(data_root)
        self.mode = mode
        # the six fine-tuning runs are independent: ``jobs`` of them at once,
        # each with its share of the cores (small models use one core far
        # better than two)
        self.jobs = max(1, jobs)
        threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
        self.job_env = dict(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        self.records = {}
        self.code_ids = None  # future of the cls_token_ids stage
        os.makedirs(self.work, exist_ok=True)
        self.start = time.time()

    # ---------------------------------------------------------------- utils
    def log(self, msg: str) -> None:
        elapsed = time.time() - self.start
        print(f'[demo {int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {msg}', flush=True)

    def stage(self, name, fn):
        if name in self.records:  # already run (or reused) in this process
            return self.records[name]['results']
        record = run_stage(self.work, name, fn, log=self.log)
        self.records[name] = record
        return record['results']

    def config(self, key: str, stage_dir: str, options: dict) -> str:
        """The stage's flat config: data roots on the bundled data, the
        previous stages' checkpoints, the demo's iteration count."""
        return prepare_config(osp.join(ROOT, CONFIGS[key]), osp.join(stage_dir, 'config.py'),
                              options, max_iters=ITERS[self.mode][key])

    def data_options(self, part: str, keys=('train', 'val', 'test')) -> dict:
        root = osp.join(self.data, part) + '/'
        return {f'{k}_dataloader.dataset.data_root': root for k in keys}

    def done(self, name: str) -> bool:
        return name in self.records or osp.isfile(osp.join(self.work, name, MARKER))

    def train(self, key, stage_dir, options, test=True, env=None):
        cfg = self.config(key, stage_dir, options)
        name = osp.basename(stage_dir)
        return train_and_test(cfg, stage_dir, test=test, env=env,
                              echo=lambda line: self.log(f'[{name}] {line.strip()}'))

    # --------------------------------------------------------------- stages
    def pretrain(self):
        """data -> tokenizer -> token predictor -> ADDP."""
        self.stage('data', self.make_data)
        tok = self.stage('tokenizer', self.train_tokenizer)
        env = None
        if self.jobs > 1 and self.code_ids is None:
            # cls_token's code ids on one core while the predictor and ADDP
            # use the others (two threads gain them only ~1.3x on 2 cores)
            if not self.done('cls_token_ids') and not self.done('addp'):
                env = self.job_env
            self.code_ids = ThreadPoolExecutor(1).submit(self.code_ids_stage, tok, self.job_env)
        pred = self.stage('token_predictor', lambda d: self.train_predictor(d, tok, env))
        addp = self.stage('addp', lambda d: self.train_addp(d, tok, pred, env))
        return tok, pred, addp

    def run(self):
        tok, pred, addp = self.pretrain()
        env = self.job_env if self.jobs > 1 else None

        def generation_and_fid(runs):
            """After the six runs in the pool: the first free core samples
            and scores them (FID features: the pixel cls run's classifier)."""
            gen = self.stage('generation', lambda d: self.generate(d, tok, pred, addp, env))
            cls = runs['cls', False].result()
            return self.stage('fid', lambda d: self.fid(d, gen, cls, env))

        self.pixel_vs_token(tok, addp, then=generation_and_fid)
        self.report()

    def pixel_vs_token(self, tok=None, addp=None, then=None):
        """The three tiny tasks, reading pixels and reading the tokenizer's
        code ids (``jobs`` runs at a time, in RUN_ORDER; seg starts from its
        cls run), then ``then(runs)`` if given; returns {task: (pixel, token)}."""
        if addp is None:
            tok, _, addp = self.pretrain()
        table = {}
        env = self.job_env if self.jobs > 1 else None

        def init(task, token):
            """The checkpoint a run starts from: seg waits for its cls run."""
            if task != 'seg':
                return addp['checkpoint']
            return runs['cls', token].result()['checkpoint']

        # a free core takes the next run in RUN_ORDER
        runs = {}
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for task, token in RUN_ORDER:
                runs[task, token] = pool.submit(
                    self.stage, f'{task}_token' if token else task,
                    lambda d, task=task, token=token: self.transfer(
                        task, d, init(task, token), tok, token_input=token, env=env))
            last = pool.submit(then, runs) if then is not None else None
            try:
                for task in ('cls', 'det', 'seg'):
                    table[task] = (runs[task, False].result(), runs[task, True].result())
                if last is not None:
                    last.result()
            except BaseException:  # a failed run: start no further ones
                for run in [*runs.values(), last]:
                    if run is not None:
                        run.cancel()
                raise
        return table

    def make_data(self, stage_dir):
        if not osp.isdir(self.data):  # the builder writes DIR.tmp, then renames
            run_tool(['tools/dataset_converters/make_demo_data.py', '--out', self.data],
                     osp.join(stage_dir, 'run.log'))
        with open(osp.join(self.data, 'sources.json')) as f:
            sources = json.load(f)
        return dict(root=self.data, parts=sorted(sources))

    def train_tokenizer(self, stage_dir):
        out = self.train('tokenizer', stage_dir, self.data_options('pretrain'))
        m = out['metrics']
        return dict(checkpoint=out['checkpoint'], psnr=m['tokenizer/psnr'],
                    code_usage=m['tokenizer/code_usage'], perplexity=m['tokenizer/perplexity'])

    def train_predictor(self, stage_dir, tok, env=None):
        options = dict(self.data_options('pretrain'))
        options['model.tokenizer.checkpoint'] = tok['checkpoint']
        out = self.train('token_predictor', stage_dir, options, env=env)
        m = out['metrics']
        return dict(checkpoint=out['checkpoint'], accuracy=m['token_predictor/accuracy'],
                    majority_baseline=m['token_predictor/majority_baseline'])

    def addp_options(self, tok, pred) -> dict:
        return {'model.tokenizer.checkpoint': tok['checkpoint'],
                'model.token_predictor.checkpoint': pred['checkpoint']}

    def train_addp(self, stage_dir, tok, pred, env=None):
        options = dict(self.data_options('pretrain', keys=('train', )), **self.addp_options(tok, pred))
        out = self.train('addp', stage_dir, options, test=False, env=env)
        curve = read_loss_curve(stage_dir)
        plot_loss_curve(curve, osp.join(stage_dir, 'loss_curve.png'))
        first, last = curve[0][1], sum(v for _, v in curve[-4:]) / len(curve[-4:])
        return dict(checkpoint=out['checkpoint'], config=osp.join(stage_dir, 'config.py'),
                    loss_first=first, loss_last=last, loss_curve=osp.join(stage_dir, 'loss_curve.png'))

    def generate(self, stage_dir, tok, pred, addp, env=None):
        samples = osp.join(stage_dir, 'samples')
        n = NUM_SAMPLES[self.mode]
        run_tool(['tools/generate.py', addp['config'], addp['checkpoint'], '--out', samples,
                  '--num-samples', str(n), '--steps', '8', '--seed', '0', '--batch-size', '32'],
                 osp.join(stage_dir, 'run.log'), env=env)
        # the two reference points of the FID table: the start image repeated, and noise
        run_tool(['-c', BASELINE_SCRIPT, addp['config'], addp['checkpoint'], stage_dir, str(n)],
                 osp.join(stage_dir, 'run.log'), env=env)
        return dict(samples=samples, grid=osp.join(samples, 'grid.png'), num_samples=n,
                    start_repeated=osp.join(stage_dir, 'start_repeated'),
                    noise=osp.join(stage_dir, 'noise'))

    def transfer_options(self, task, init, tok, token_input=False) -> dict:
        part = dict(cls='imagenet', det='coco', seg='ade')[task]
        options = self.data_options(part)
        options['model.backbone.init_cfg.checkpoint'] = init
        if task == 'det':
            ann = osp.join(self.data, 'coco', 'annotations', 'instances_val2017.json')
            options['val_evaluator.ann_file'] = ann
            options['test_evaluator.ann_file'] = ann
        if token_input:
            tokenizer = load_config(osp.join(ROOT, CONFIGS['addp'])).model.tokenizer.to_dict()
            tokenizer['checkpoint'] = tok['checkpoint']
            options['model.backbone.token_input'] = dict(_delete_=True, tokenizer=tokenizer)
        return options

    def code_ids_stage(self, tok, env=None):
        """The code ids of cls_token's augmented training views (as many views
        as its schedule makes passes over the data), written once."""

        def encode(stage_dir):
            cfg = self.config('cls', stage_dir, self.transfer_options('cls', None, tok, True))
            out = osp.join(stage_dir, 'code_ids.npz')
            run_tool(['tools/dataset_converters/cache_code_ids.py', cfg, '--out', out],
                     osp.join(stage_dir, 'run.log'), env=env,
                     echo=lambda line: self.log(f'[cls_token_ids] {line.strip()}'))
            return dict(file=out)

        return self.stage('cls_token_ids', encode)

    def transfer(self, task, stage_dir, init, tok, token_input=False, env=None):
        """Fine-tune and test one tiny task from the checkpoint ``init``."""
        options = self.transfer_options(task, init, tok, token_input)
        if task == 'cls' and token_input:  # read the code ids computed before
            ids = (self.code_ids.result() if self.code_ids is not None else
                   self.code_ids_stage(tok, env))
            num_codes = options['model.backbone.token_input']['tokenizer'].get('num_codes')
            options['train_dataloader.dataset'] = dict(
                _delete_=True, type='CodeIdDataset', cache=ids['file'], num_codes=num_codes,
                pipeline=[dict(type='PackInputs')])
            options['data_preprocessor.type'] = 'CodeIdDataPreprocessor'
        out = self.train(task, stage_dir, options, env=env)
        m = out['metrics']
        if task == 'cls':
            results = dict(top1=m['accuracy/top1'])
        elif task == 'det':
            results = dict(bbox_AP=100 * m['coco/bbox_mAP'], bbox_AP50=100 * m['coco/bbox_mAP_50'],
                           segm_AP=100 * m['coco/segm_mAP'], segm_AP50=100 * m['coco/segm_mAP_50'])
        else:
            results = dict(mIoU=m['mIoU'], aAcc=m['aAcc'])
        return dict(results, checkpoint=out['checkpoint'], config=osp.join(stage_dir, 'config.py'))

    def fid(self, stage_dir, gen, cls, env=None):
        ref = osp.join(self.data, 'pretrain', 'val')
        results = {}
        for name, folder in (('samples', gen['samples']), ('start_repeated', gen['start_repeated']),
                             ('noise', gen['noise'])):
            out = osp.join(stage_dir, f'{name}.json')
            run_tool(['tools/eval_fid.py', folder, ref, '--feature-config', cls['config'],
                      '--feature-checkpoint', cls['checkpoint'], '--out', out],
                     osp.join(stage_dir, 'run.log'), env=env)
            with open(out) as f:
                metrics = json.load(f)
            results[f'fid_{name}'] = metrics['fid']
            if name == 'samples':
                results['is_samples'] = metrics['is_mean']
        return results

    # --------------------------------------------------------------- report
    def report(self):
        rec = {k: v['results'] for k, v in self.records.items()}
        metrics = {
            'tokenizer/psnr': rec['tokenizer']['psnr'],
            'tokenizer/code_usage': rec['tokenizer']['code_usage'],
            'tokenizer/perplexity': rec['tokenizer']['perplexity'],
            'token_predictor/accuracy': rec['token_predictor']['accuracy'],
            'token_predictor/majority_baseline': rec['token_predictor']['majority_baseline'],
            'addp/loss_first': rec['addp']['loss_first'],
            'addp/loss_last': rec['addp']['loss_last'],
            'generation/fid': rec['fid']['fid_samples'],
            'generation/fid_start_repeated': rec['fid']['fid_start_repeated'],
            'generation/fid_noise': rec['fid']['fid_noise'],
            'generation/inception_score': rec['fid']['is_samples'],
            'cls/top1': rec['cls']['top1'],
            'det/bbox_AP': rec['det']['bbox_AP'], 'det/bbox_AP50': rec['det']['bbox_AP50'],
            'det/segm_AP': rec['det']['segm_AP'], 'det/segm_AP50': rec['det']['segm_AP50'],
            'seg/mIoU': rec['seg']['mIoU'],
            'token_input/cls/top1': rec['cls_token']['top1'],
            'token_input/det/bbox_AP50': rec['det_token']['bbox_AP50'],
            'token_input/det/segm_AP50': rec['det_token']['segm_AP50'],
            'token_input/seg/mIoU': rec['seg_token']['mIoU'],
        }
        metrics = {k: round(float(v), 4) for k, v in metrics.items()}
        seconds = {k: v['seconds'] for k, v in self.records.items()}
        wall = round(time.time() - self.start, 1)
        reused = sorted(k for k, v in self.records.items() if v['skipped'])
        bars = {k: dict(value=metrics[k], bar=b, met=metrics[k] >= b) for k, b in BARS.items()}
        figures = self.copy_figures(rec)
        write_json_atomic(osp.join(self.work, 'metrics.json'),
                          dict(mode=self.mode, metrics=metrics, bars=bars,
                               stage_seconds=seconds, wall_seconds=wall, reused_stages=reused,
                               figures=figures))
        with open(osp.join(self.work, 'report.md.tmp'), 'w') as f:
            f.write(render_report(self.mode, metrics, bars, seconds, reused, figures, wall))
        os.replace(osp.join(self.work, 'report.md.tmp'), osp.join(self.work, 'report.md'))
        self.log(f'report: {osp.join(self.work, "report.md")}')
        self.log(f'metrics: {json.dumps(metrics)}')

    def copy_figures(self, rec) -> dict:
        figures = dict(loss_curve='loss_curve.png', samples='samples_grid.png')
        shutil.copy(rec['addp']['loss_curve'], osp.join(self.work, figures['loss_curve']))
        shutil.copy(rec['generation']['grid'], osp.join(self.work, figures['samples']))
        return figures


BASELINE_SCRIPT = r'''
import os, sys, torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torchvision.utils import save_image
import mmaddp
from mmaddp.registry import MODELS
cfg_path, ckpt, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = Config.fromfile(cfg_path)
init_default_scope(cfg.get('default_scope', 'mmpretrain'))
model = MODELS.build(cfg.model)
model.load_checkpoint(ckpt)
model.eval()
with torch.no_grad():
    start = model.start_pixels()[0].clamp(0, 1)
g = torch.Generator().manual_seed(0)
for name in ('start_repeated', 'noise'):
    os.makedirs(os.path.join(out, name))
    for i in range(n):
        img = start if name == 'start_repeated' else torch.rand(start.shape, generator=g)
        save_image(img, os.path.join(out, name, f'{i:06d}.png'))
'''


def read_loss_curve(work_dir: str):
    """(iteration, loss) pairs from MMEngine's ``vis_data/scalars.json``."""
    curve = []
    for dirpath, _, files in os.walk(work_dir):
        if 'scalars.json' in files and dirpath.endswith('vis_data'):
            with open(osp.join(dirpath, 'scalars.json')) as f:
                for line in f:
                    entry = json.loads(line)
                    if 'loss' in entry and 'iter' in entry:
                        curve.append((entry['iter'], entry['loss']))
    if not curve:
        raise RuntimeError(f'No loss entries in {work_dir}/*/vis_data/scalars.json')
    return sorted(curve)


def plot_loss_curve(curve, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([i for i, _ in curve], [v for _, v in curve], lw=1.5)
    ax.set_xlabel('iteration')
    ax.set_ylabel('denoising loss')
    ax.set_title('ADDP pretraining (tiny ViT, bundled corpus)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_report(mode, m, bars, seconds, reused, figures, wall) -> str:
    def mark(key):
        return '' if key not in bars else (' (bar >= %g: %s)' % (bars[key]['bar'],
                                                               'met' if bars[key]['met'] else 'NOT met'))

    lines = [
        '# ADDP demo report', '',
        f'Mode: {mode}. Everything ran on the bundled data (`make data`), on CPU.', '',
        '## Metrics', '',
        '| stage | metric | value |', '|---|---|---|',
        f'| tokenizer | PSNR (dB), val | {m["tokenizer/psnr"]:.2f} |',
        f'| tokenizer | code usage | {m["tokenizer/code_usage"]:.3f} |',
        f'| tokenizer | perplexity | {m["tokenizer/perplexity"]:.1f} |',
        f'| token predictor | masked-token accuracy (%) | {m["token_predictor/accuracy"]:.2f} '
        f'(most common code: {m["token_predictor/majority_baseline"]:.2f}) |',
        f'| ADDP pretraining | loss, first log -> mean of last 4 | {m["addp/loss_first"]:.3f} -> '
        f'{m["addp/loss_last"]:.3f} |',
        f'| generation | FID (demo classifier features), samples | {m["generation/fid"]:.2f} |',
        f'| generation | FID, start image repeated | {m["generation/fid_start_repeated"]:.2f} |',
        f'| generation | FID, uniform noise | {m["generation/fid_noise"]:.2f} |',
        f'| generation | Inception Score (demo classifier) | '
        f'{m["generation/inception_score"]:.2f} |',
        f'| classification | top-1 (%) | {m["cls/top1"]:.2f}{mark("cls/top1")} |',
        f'| detection | box AP / AP50 | {m["det/bbox_AP"]:.1f} / {m["det/bbox_AP50"]:.1f}'
        f'{mark("det/bbox_AP50")} |',
        f'| instance seg. | mask AP / AP50 | {m["det/segm_AP"]:.1f} / {m["det/segm_AP50"]:.1f}'
        f'{mark("det/segm_AP50")} |',
        f'| semantic seg. | mIoU | {m["seg/mIoU"]:.2f}{mark("seg/mIoU")} |',
        '', '## Pixel versus token input (same schedule, same ADDP checkpoint)', '',
        '| task | metric | pixels | tokens |', '|---|---|---|---|',
        f'| classification | top-1 | {m["cls/top1"]:.2f} | {m["token_input/cls/top1"]:.2f} |',
        f'| detection | box AP50 | {m["det/bbox_AP50"]:.1f} | '
        f'{m["token_input/det/bbox_AP50"]:.1f} |',
        f'| instance seg. | mask AP50 | {m["det/segm_AP50"]:.1f} | '
        f'{m["token_input/det/segm_AP50"]:.1f} |',
        f'| semantic seg. | mIoU | {m["seg/mIoU"]:.2f} | {m["token_input/seg/mIoU"]:.2f} |',
        '', '## Figures', '',
        f'![pretraining loss]({figures["loss_curve"]})', '',
        f'![samples]({figures["samples"]})', '',
        '## Wall time per stage', '',
        'Seconds of the run that made each stage (stages reused from an earlier run '
        'of the demo are marked).', '',
        '| stage | seconds |', '|---|---|',
    ]
    lines += [f'| {k} | {v:.0f}{" (reused)" if k in reused else ""} |'
              for k, v in seconds.items()]
    lines += [f'| sum of the stages | {sum(seconds.values()):.0f} |',
              f'| this command, wall clock (stages overlap with --jobs > 1) | {wall:.0f} |', '']
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description='Run the ADDP demo end to end')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo',
                        help='the bundled data (built here when missing)')
    parser.add_argument('--quick', action='store_true',
                        help='a few iterations per stage: checks the plumbing, not the numbers')
    parser.add_argument('--jobs', type=int, default=2,
                        help='fine-tuning runs at once (pixel / token input x 3 tasks), '
                        'each with cores / jobs threads; 1 runs them one after the other')
    args = parser.parse_args()
    with tools_stopped_on_failure():
        Demo(args.work_dir, args.data_root, 'quick' if args.quick else 'full',
             jobs=args.jobs).run()


if __name__ == '__main__':
    main()
