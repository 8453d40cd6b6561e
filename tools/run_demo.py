"""ADDP end to end on the bundled data, on CPU: one command, one report.

    python tools/run_demo.py [--work-dir work_dirs/demo] [--quick] [--jobs 2]
                             [--second-seed auto|always|never]

What it shows, each measured by the project's own tools in the same run
(``WORK_DIR/report.md``, ``WORK_DIR/metrics.json``, figures):

1. Generation: ADDP samples against the token predictor sampling alone
   (MAGE-style, same steps, schedule and seeds), the tokenizer's
   reconstructions of the val images (the ceiling), the start image repeated
   and uniform noise: FID / IS with the demo classifier as feature network,
   and the share of images it assigns a digit with p >= 0.9.
2. Representation: the ADDP encoder against the same encoder from random
   weights, same recipe and budget: linear probe on frozen tokens, fine-tuning
   with 100 labels per class and with all, Mask R-CNN and UperNet (both from
   the ADDP checkpoint itself).
3. Pixel versus token input: the three tasks reading the tokenizer's code ids
   instead of pixels, from the same ADDP checkpoint and schedules.

Where the probe's or the few-label margin (ADDP minus random weights) is
within two standard errors, the demo runs that comparison again with a
second seed (ADDP pretraining, the random encoder and the fine-tuning all
with seed 1: stages ``*_seed1``) and reports both seeds and their mean
(``--second-seed``).

Stages form a graph (``DEPENDS``); ``--jobs`` of them run at once (each with
cores / jobs threads), the highest in ``PRIORITY`` among those whose inputs
are ready going first, so the random-weight baselines fill the second core
while the tokenizer, token predictor and ADDP train on the first. A stage is
skipped when its folder holds a DONE.json; an interrupted one is wiped and
redone. ``--quick`` runs a few iterations per stage (for tests): the
plumbing, not the numbers.
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

from mmaddp.engine.optimizers import cpu_flags
from demo.stages import (load_config, prepare_config, run_stage, run_tool, tools_stopped_on_failure,
                         train_and_test, write_json_atomic)

CONFIGS = dict(
    tokenizer='configs/vq_tokenizer/vq-tokenizer-tiny-f4_1xb64-1000i_demo.py',
    token_predictor='configs/token_predictor/token-predictor-tiny_1xb64-2400i_demo.py',
    addp='configs/addp/addp_vit-nano-p4_1xb64-1000i_demo.py',
    cls='configs/imagenet/addp-vit-nano-p4_1xb64-6000i_demo.py',
    cls_few='configs/imagenet/addp-vit-nano-p4_1xb64-1000i_demo-100-per-class.py',
    det='configs/mask_rcnn/mask-rcnn_addp-vit-nano-p4_simple-fpn_1xb8-500i_demo-64px.py',
    seg='configs/upernet/upernet_addp-vit-nano-p4_1xb8-1400i_demo-64x64.py',
)
#: iterations per stage (None: the config's own)
ITERS = dict(
    full=dict(
        tokenizer=None, token_predictor=None, addp=None, cls=None, cls_few=None, det=None,
        seg=None),
    quick=dict(tokenizer=20, token_predictor=20, addp=20, cls=20, cls_few=10, det=10, seg=10),
)
#: few-label fine-tuning: labelled images per class (``cls_few``'s config)
FEW_LABELS = 100
#: what the token predictor stage records (``MaskedTokenAccuracy``); the
#: last three say what ADDP's targets can teach: nats per masked id beyond
#: code frequencies
PREDICTOR_METRICS = ('accuracy', 'majority_baseline', 'nll', 'marginal_nll', 'information')
#: linear probe: training images per class (the whole val split is scored)
PROBE_PER_CLASS = dict(full=300, quick=20)
NUM_SAMPLES = dict(full=256, quick=16)
GEN_STEPS = 8
#: the fine-tuning runs: name -> (task, start, reads code ids, few labels);
#: start 'addp' is the ADDP checkpoint, 'random' the same encoder from scratch
RUNS = {
    'cls': ('cls', 'addp', False, False),
    'cls_random': ('cls', 'random', False, False),
    'cls_few': ('cls', 'addp', False, True),
    'cls_few_random': ('cls', 'random', False, True),
    'det': ('det', 'addp', False, False),
    'det_random': ('det', 'random', False, False),
    'seg': ('seg', 'addp', False, False),
    'seg_random': ('seg', 'random', False, False),
    'cls_token': ('cls', 'addp', True, False),
    'det_token': ('det', 'addp', True, False),
    'seg_token': ('seg', 'addp', True, False),
}
#: the second seed: the seed of every draw in its runs, and the margins it
#: repeats (target metric -> the stages behind it, ADDP first)
SECOND_SEED = 1
SEED_MARGINS = {
    'probe/top1': ('probe', 'probe_random'),
    'cls_few/top1': ('cls_few', 'cls_few_random')
}


def seeded(name: str) -> str:
    """The second-seed stage (or metric key) that repeats ``name``."""
    stage, _, key = name.partition('/')
    return f'{stage}_seed{SECOND_SEED}' + (f'/{key}' if key else '')


#: second-seed stage -> the first-seed stage it repeats (``addp_seed1``
#: pretrains again; the others read its checkpoint or random weights)
SEED_STAGES = {
    seeded(name): name
    for name in ('addp', 'probe', 'probe_random', 'cls_few', 'cls_few_random')
}
ADDP_SEED = seeded('addp')
#: stage -> the stages whose results it needs
DEPENDS = dict(
    data=(),
    tokenizer=('data', ),
    token_predictor=('tokenizer', ),
    addp=('token_predictor', ),
    cls_token_ids=('tokenizer', ),
    generation=('addp', ),
    evaluation=('generation', 'cls'),
    probe=('addp', ),
    probe_random=('data', ),
    **{
        name: (('addp', 'cls_token_ids') if name == 'cls_token' else
               ('addp', ) if start == 'addp' else ('data', ))
        for name, (_, start, _, _) in RUNS.items()
    },
    # whether a second seed is needed is known once the first seed's margins are
    **{ADDP_SEED: ('token_predictor', ) + sum(SEED_MARGINS.values(), ())},
    **{name: (ADDP_SEED, )
       for name in SEED_STAGES if name != ADDP_SEED})
#: which ready stage a free core takes first: the pretraining chain and the
#: path to the generation metrics, then the runs that decide on a second
#: seed and that seed's runs, the other ADDP runs, the token-input runs, the
#: random-weight baselines (ready from the start: they fill the second core
#: while the chain trains on the first; the cheap ones behind the second
#: seed's decision first)
PRIORITY = ('data', 'tokenizer', 'token_predictor', 'addp', 'cls', 'generation', 'evaluation',
            'probe', 'cls_few', *SEED_STAGES, 'seg', 'det', 'cls_token_ids', 'cls_token',
            'det_token', 'seg_token', 'probe_random', 'cls_few_random', 'cls_random', 'seg_random',
            'det_random')
SECOND_SEED_MODES = ('auto', 'always', 'never')
#: stages that run alone with every core: the tokenizer heads the critical
#: path and its convolutions gain ~1.7x from a second thread (0.75 -> 0.42 s
#: per iteration), more than what the second core would do meanwhile
EXCLUSIVE = ('tokenizer', )
#: the bars of the issues (metric key in metrics.json, minimum)
BARS = {'cls/top1': 90.0, 'seg/mIoU': 50.0, 'det/bbox_AP50': 50.0, 'det/segm_AP50': 40.0}
#: the targets of issue 19 (key, comparison, reference key or number, margin)
TARGETS = (
    ('tokenizer/psnr', '>=', None, 22.0),
    ('tokenizer/recon_top1', '>=', 'cls/top1', -5.0),
    ('generation/addp/fid', '<=', 'generation/noise/fid', 0.5),  # at most half
    ('generation/addp/fid', '<', 'generation/predictor/fid', 0.0),
    ('generation/addp/confident_share', '>=', None, 60.0),
    ('probe/top1', '>=', 'probe_random/top1', 20.0),
    ('cls_few/top1', '>=', 'cls_few_random/top1', 10.0),
    ('det/bbox_AP50', '>=', 'det_random/bbox_AP50', 5.0),
    ('seg/mIoU', '>=', 'seg_random/mIoU', 5.0),
)


class Demo:

    def __init__(self,
                 work_dir: str,
                 data_root: str,
                 mode: str,
                 jobs: int = 2,
                 second_seed: str = 'auto'):
        if second_seed not in SECOND_SEED_MODES:
            raise ValueError(f'second_seed must be one of {SECOND_SEED_MODES}, got {second_seed!r}')
        self.second_seed = second_seed
        self.work = osp.abspath(work_dir)
        self.data = osp.abspath(data_root)
        self.mode = mode
        # independent stages run ``jobs`` at once, each with its share of the
        # cores (small models use one core far better than two)
        self.jobs = max(1, jobs)
        threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
        self.job_env = dict(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        self.records = {}
        self.local = threading.local()  # per worker thread: its stage's env
        os.makedirs(self.work, exist_ok=True)
        self.start = time.time()

    # ---------------------------------------------------------------- utils
    def log(self, msg: str) -> None:
        elapsed = time.time() - self.start
        print(f'[demo {int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {msg}', flush=True)

    def result(self, name: str) -> dict:
        return self.records[name]['results']

    def config(self, key: str, stage_dir: str, options: dict) -> str:
        """The stage's flat config: data roots on the bundled data, the
        previous stages' checkpoints, the demo's iteration count."""
        iters = ITERS[self.mode][key]
        return prepare_config(
            osp.join(ROOT, CONFIGS[key]),
            osp.join(stage_dir, 'config.py'),
            options,
            max_iters=iters)

    def data_options(self, part: str, keys=('train', 'val', 'test')) -> dict:
        root = osp.join(self.data, part) + '/'
        return {f'{k}_dataloader.dataset.data_root': root for k in keys}

    def train(self, key, stage_dir, options, test=True, seed=None):
        """Train (and test) the stage's config; ``seed`` replaces the
        config's ``randomness.seed`` (the second seed's runs)."""
        if seed is not None:
            options = dict(options, **{'randomness.seed': seed})
        cfg = self.config(key, stage_dir, options)
        name = osp.basename(stage_dir)
        return train_and_test(
            cfg,
            stage_dir,
            test=test,
            env=self.env,
            echo=lambda line: self.log(f'[{name}] {line.strip()}'))

    def tool(self, args, stage_dir):
        name = osp.basename(stage_dir)
        run_tool(
            args,
            osp.join(stage_dir, 'run.log'),
            env=self.env,
            echo=lambda line: self.log(f'[{name}] {line.strip()}'))

    @property
    def env(self):
        """The thread settings of the stage running in this thread."""
        return getattr(self.local, 'env', self.job_env if self.jobs > 1 else None)

    # ---------------------------------------------------------------- graph
    def stage_fns(self) -> dict:
        fns = dict(
            data=self.make_data,
            tokenizer=self.train_tokenizer,
            token_predictor=self.train_predictor,
            addp=self.train_addp,
            cls_token_ids=self.code_ids,
            generation=self.generate,
            evaluation=self.evaluate,
            probe=lambda d: self.probe(d, 'addp'),
            probe_random=lambda d: self.probe(d, 'random'))
        for name, spec in RUNS.items():
            fns[name] = lambda d, spec=spec: self.transfer(d, *spec)
        fns[ADDP_SEED] = self.train_addp_second_seed
        for name in SEED_STAGES:
            if name != ADDP_SEED:
                fns[name] = lambda d, name=name: self.repeat_with_second_seed(d, name)
        return fns

    def run(self, stages=None):
        """Run ``stages`` (default: all) and what they depend on, then the
        report (when every stage ran)."""
        fns = self.stage_fns()
        wanted, todo = set(), list(stages or PRIORITY)
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo += DEPENDS[name]
        pending = [n for n in PRIORITY if n in wanted]
        running = {}
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        try:
            while pending or running:
                for name in list(pending):
                    if len(running) >= self.jobs or any(running[f] in EXCLUSIVE for f in running):
                        break
                    if not all(d in self.records for d in DEPENDS[name]):
                        continue
                    if name in EXCLUSIVE and running:
                        break  # wait until the others finish, then run it alone
                    pending.remove(name)
                    running[pool.submit(self.run_one, name, fns[name])] = name
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    self.records[running.pop(future)] = future.result()
        except BaseException:  # a failed stage: start no further ones
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if set(PRIORITY) <= set(self.records):
            self.report()

    def run_one(self, name, fn):
        """One stage; an EXCLUSIVE one gets every core's thread."""
        self.local.env = (None if name in EXCLUSIVE or self.jobs == 1 else self.job_env)
        return run_stage(self.work, name, fn, self.log)

    # --------------------------------------------------------------- stages
    def make_data(self, stage_dir):
        if not osp.isdir(self.data):  # the builder writes DIR.tmp, then renames
            run_tool(['tools/dataset_converters/make_demo_data.py', '--out', self.data],
                     osp.join(stage_dir, 'run.log'))
        with open(osp.join(self.data, 'sources.json')) as f:
            sources = json.load(f)
        return dict(root=self.data, parts=sorted(sources))

    def train_tokenizer(self, stage_dir):
        out = self.train('tokenizer', stage_dir, self.data_options('imagenet'))
        m = out['metrics']
        return dict(
            checkpoint=out['checkpoint'],
            config=osp.join(stage_dir, 'config.py'),
            psnr=m['tokenizer/psnr'],
            code_usage=m['tokenizer/code_usage'],
            perplexity=m['tokenizer/perplexity'])

    def train_predictor(self, stage_dir):
        options = dict(self.data_options('imagenet'))
        options['model.tokenizer.checkpoint'] = self.result('tokenizer')['checkpoint']
        out = self.train('token_predictor', stage_dir, options)
        m = out['metrics']
        return dict(
            checkpoint=out['checkpoint'],
            **{k: m[f'token_predictor/{k}']
               for k in PREDICTOR_METRICS})

    def train_addp(self, stage_dir, seed=None):
        options = dict(self.data_options('imagenet', keys=('train', )))
        options['model.tokenizer.checkpoint'] = self.result('tokenizer')['checkpoint']
        options['model.token_predictor.checkpoint'] = self.result('token_predictor')['checkpoint']
        out = self.train('addp', stage_dir, options, test=False, seed=seed)
        curve = read_loss_curve(stage_dir)
        plot_loss_curve(curve, osp.join(stage_dir, 'loss_curve.png'))
        first, last = curve[0][1], sum(v for _, v in curve[-4:]) / len(curve[-4:])
        return dict(
            checkpoint=out['checkpoint'],
            config=osp.join(stage_dir, 'config.py'),
            loss_first=first,
            loss_last=last,
            loss_curve=osp.join(stage_dir, 'loss_curve.png'))

    def generate(self, stage_dir):
        """ADDP samples, the token predictor's own (MAGE-style) samples with
        the same seeds and steps, the two references (start image, noise),
        and the tokenizer's reconstructions of the val images."""
        addp, n = self.result('addp'), NUM_SAMPLES[self.mode]
        folders = {}
        for sampler in ('addp', 'predictor', 'start', 'noise'):
            folders[sampler] = osp.join(stage_dir, sampler)
            self.tool([
                'tools/generate.py', addp['config'], addp['checkpoint'], '--sampler', sampler,
                '--out', folders[sampler], '--num-samples',
                str(n), '--steps',
                str(GEN_STEPS), '--seed', '0', '--batch-size', '32'
            ], stage_dir)
        tok = self.result('tokenizer')
        folders['recon'] = osp.join(stage_dir, 'recon')
        self.tool([
            'tools/analysis_tools/reconstruct.py', tok['config'], tok['checkpoint'],
            osp.join(self.data, 'imagenet', 'val'),
            osp.join(folders['recon'], 'val')
        ], stage_dir)
        return dict(folders=folders, num_samples=n, steps=GEN_STEPS)

    def evaluate(self, stage_dir):
        """FID / IS / share with p >= 0.9 of every image set against the val
        images (the pixel cls run's classifier as feature network), and that
        classifier's top-1 on the reconstructed val images."""
        gen, cls = self.result('generation'), self.result('cls')
        ref = osp.join(self.data, 'imagenet', 'val')
        results = {}
        # the val images themselves: FID 0 by definition, but their share with
        # p >= 0.9 is the ceiling of the samples' share under this classifier
        for name, folder in dict(gen['folders'], real=ref).items():
            out = osp.join(stage_dir, f'{name}.json')
            self.tool([
                'tools/eval_fid.py', folder, ref, '--feature-config', cls['config'],
                '--feature-checkpoint', cls['checkpoint'], '--out', out
            ], stage_dir)
            with open(out) as f:
                m = json.load(f)
            results[name] = dict(
                fid=m['fid'], inception_score=m['is_mean'], confident_share=m['confident_share'])
        work = osp.join(stage_dir, 'recon_test')
        self.tool([
            'tools/test.py', cls['config'], cls['checkpoint'], '--work-dir', work, '--cfg-options',
            f'test_dataloader.dataset.data_root={gen["folders"]["recon"]}/'
        ], stage_dir)
        with open(osp.join(work, 'test_metrics.json')) as f:
            results['recon_top1'] = json.load(f)['metrics']['accuracy/top1']
        return results

    def addp_checkpoint(self, seed=None) -> str:
        """The ADDP checkpoint of the first seed (None) or the second."""
        return self.result('addp' if seed is None else ADDP_SEED)['checkpoint']

    def probe(self, stage_dir, start, seed=None):
        out = osp.join(stage_dir, 'probe.json')
        encoder = (['--random'] if start == 'random' else [self.addp_checkpoint(seed)])
        cfg = self.config('cls', stage_dir, self.data_options('imagenet'))
        self.tool([
            'tools/analysis_tools/linear_probe.py', cfg, *encoder, '--train-per-class',
            str(PROBE_PER_CLASS[self.mode]), '--out', out, '--seed',
            str(seed or 0)
        ], stage_dir)
        with open(out) as f:
            return json.load(f)

    def few_label_file(self) -> str:
        """The first FEW_LABELS training images of every class (file order),
        as an mmpretrain annotation file relative to ``imagenet/train``."""
        path = osp.join(self.work, f'few_labels_{FEW_LABELS}.txt')
        if not osp.isfile(path):
            root = osp.join(self.data, 'imagenet', 'train')
            lines = []
            for label, cls in enumerate(sorted(os.listdir(root))):
                files = sorted(os.listdir(osp.join(root, cls)))[:FEW_LABELS]
                lines += [f'{cls}/{f} {label}' for f in files]
            with open(path + '.tmp', 'w') as f:
                f.write('\n'.join(lines) + '\n')
            os.replace(path + '.tmp', path)
        return path

    def tokenizer_input(self) -> dict:
        tokenizer = load_config(osp.join(ROOT, CONFIGS['addp'])).model.tokenizer.to_dict()
        tokenizer['checkpoint'] = self.result('tokenizer')['checkpoint']
        return dict(_delete_=True, tokenizer=tokenizer)

    def transfer_options(self, task, start, token_input=False, few=False, seed=None) -> dict:
        part = dict(cls='imagenet', det='coco', seg='ade')[task]
        options = self.data_options(part)
        if start == 'random':
            options['model.backbone.init_cfg'] = None
        else:
            options['model.backbone.init_cfg.checkpoint'] = self.addp_checkpoint(seed)
        if task == 'det':
            ann = osp.join(self.data, 'coco', 'annotations', 'instances_val2017.json')
            options['val_evaluator.ann_file'] = ann
            options['test_evaluator.ann_file'] = ann
        if few:
            options['train_dataloader.dataset.ann_file'] = self.few_label_file()
        if token_input:
            options['model.backbone.token_input'] = self.tokenizer_input()
        return options

    def code_ids(self, stage_dir):
        """The code ids of cls_token's augmented training views (as many views
        as its schedule makes passes over the data), written once."""
        options = dict(
            self.data_options('imagenet'), **{'model.backbone.token_input': self.tokenizer_input()})
        cfg = self.config('cls', stage_dir, options)
        out = osp.join(stage_dir, 'code_ids.npz')
        self.tool(['tools/dataset_converters/cache_code_ids.py', cfg, '--out', out], stage_dir)
        return dict(file=out)

    def transfer(self, stage_dir, task, start, token_input=False, few=False, seed=None):
        """Fine-tune and test one tiny task from ADDP or from random weights
        (``seed``: the second seed's run, from its ADDP checkpoint)."""
        options = self.transfer_options(task, start, token_input, few, seed)
        if task == 'cls' and token_input:  # read the code ids computed before
            num_codes = options['model.backbone.token_input']['tokenizer'].get('num_codes')
            options['train_dataloader.dataset'] = dict(
                _delete_=True,
                type='CodeIdDataset',
                cache=self.result('cls_token_ids')['file'],
                num_codes=num_codes,
                pipeline=[dict(type='PackInputs')])
            options['data_preprocessor.type'] = 'CodeIdDataPreprocessor'
        out = self.train('cls_few' if few else task, stage_dir, options, seed=seed)
        m = out['metrics']
        if task == 'cls':
            results = dict(top1=m['accuracy/top1'])
        elif task == 'det':
            results = dict(
                bbox_AP=100 * m['coco/bbox_mAP'],
                bbox_AP50=100 * m['coco/bbox_mAP_50'],
                segm_AP=100 * m['coco/segm_mAP'],
                segm_AP50=100 * m['coco/segm_mAP_50'])
        else:
            results = dict(mIoU=m['mIoU'], aAcc=m['aAcc'])
        return dict(results, checkpoint=out['checkpoint'], config=osp.join(stage_dir, 'config.py'))

    def margins_to_repeat(self) -> dict:
        """Target metric of ``SEED_MARGINS`` -> whether the second seed
        repeats it: always / never as ``second_seed`` says, else (``'auto'``)
        where the first seed's margin is within two standard errors."""
        n = self.counts()['cls_val']
        repeat = {}
        for key, (addp, random) in SEED_MARGINS.items():
            if self.second_seed == 'auto':
                a, b = self.result(addp)['top1'], self.result(random)['top1']
                repeat[key] = a - b <= two_standard_errors(a, b, n)
            else:
                repeat[key] = self.second_seed == 'always'
        return repeat

    def train_addp_second_seed(self, stage_dir):
        """ADDP pretraining again with the second seed, where a margin of
        ``SEED_MARGINS`` asks for it (``ran`` False otherwise)."""
        repeat = self.margins_to_repeat()
        if not any(repeat.values()):
            self.log(f'[{ADDP_SEED}] no second seed: {repeat}')
            return dict(ran=False, repeat=repeat)
        return dict(self.train_addp(stage_dir, seed=SECOND_SEED), ran=True, repeat=repeat)

    def repeat_with_second_seed(self, stage_dir, name):
        """The first-seed stage that ``name`` repeats, with the second seed
        for everything drawn and the second ADDP checkpoint, where its margin
        is repeated."""
        first = SEED_STAGES[name]
        key = next(k for k, stages in SEED_MARGINS.items() if first in stages)
        if not self.result(ADDP_SEED)['repeat'][key]:
            return dict(ran=False)
        if first in ('probe', 'probe_random'):
            start = 'random' if first == 'probe_random' else 'addp'
            return dict(self.probe(stage_dir, start, seed=SECOND_SEED), ran=True)
        return dict(self.transfer(stage_dir, *RUNS[first], seed=SECOND_SEED), ran=True)

    # --------------------------------------------------------------- report
    def collect_metrics(self) -> dict:
        r = self.result
        tok, ev = r('tokenizer'), r('evaluation')
        m = {
            'tokenizer/psnr': tok['psnr'],
            'tokenizer/code_usage': tok['code_usage'],
            'tokenizer/perplexity': tok['perplexity'],
            'tokenizer/recon_top1': ev['recon_top1'],
            **{
                f'token_predictor/{k}': r('token_predictor')[k]
                for k in PREDICTOR_METRICS
            }, 'addp/loss_first': r('addp')['loss_first'],
            'addp/loss_last': r('addp')['loss_last']
        }
        for name in ('addp', 'predictor', 'recon', 'start', 'noise', 'real'):
            for key, value in ev[name].items():
                m[f'generation/{name}/{key}'] = value
        for name in ('probe', 'probe_random'):
            m[f'{name}/top1'] = r(name)['top1']
        for name, (task, _, _, _) in RUNS.items():
            keys = dict(
                cls=('top1', ),
                det=('bbox_AP', 'bbox_AP50', 'segm_AP', 'segm_AP50'),
                seg=('mIoU', ))[task]
            for key in keys:
                m[f'{name}/{key}'] = r(name)[key]
        for name in SEED_STAGES:  # the second seed, where it ran
            if r(name)['ran']:
                keys = ('loss_first', 'loss_last') if name == ADDP_SEED else ('top1', )
                m.update({f'{name}/{key}': r(name)[key] for key in keys})
        return {k: round(float(v), 4) for k, v in m.items()}

    def report(self):
        metrics = self.collect_metrics()
        seconds = {k: v['seconds'] for k, v in self.records.items()}
        wall = round(time.time() - self.start, 1)
        reused = sorted(k for k, v in self.records.items() if v['skipped'])
        bars = {k: dict(value=metrics[k], bar=b, met=metrics[k] >= b) for k, b in BARS.items()}
        targets = check_targets(metrics, self.counts())
        figures = self.make_figures()
        flags = sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile'})
        write_json_atomic(
            osp.join(self.work, 'metrics.json'),
            dict(
                mode=self.mode,
                metrics=metrics,
                bars=bars,
                targets=targets,
                stage_seconds=seconds,
                wall_seconds=wall,
                reused_stages=reused,
                figures=figures,
                cpu_flags=flags,
                cpu_count=os.cpu_count()))
        with open(osp.join(self.work, 'report.md.tmp'), 'w') as f:
            f.write(
                render_report(self.mode, metrics, bars, targets, seconds, reused, figures, wall,
                              flags))
        os.replace(osp.join(self.work, 'report.md.tmp'), osp.join(self.work, 'report.md'))
        self.log(f'report: {osp.join(self.work, "report.md")}')
        self.log(f'metrics: {json.dumps(metrics)}')

    def counts(self) -> dict:
        """Images behind each accuracy (for standard errors)."""
        with open(osp.join(self.data, 'counts.json')) as f:
            return dict(cls_val=json.load(f)['imagenet']['val'])

    def make_figures(self) -> dict:
        figures = dict(
            loss_curve='loss_curve.png',
            samples='samples_grid.png',
            side_by_side='side_by_side.png')
        shutil.copy(self.result('addp')['loss_curve'], osp.join(self.work, figures['loss_curve']))
        folders = self.result('generation')['folders']
        shutil.copy(osp.join(folders['addp'], 'grid.png'), osp.join(self.work, figures['samples']))
        plot_side_by_side(
            osp.join(self.data, 'imagenet', 'val'), folders,
            osp.join(self.work, figures['side_by_side']))
        return figures


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


def two_standard_errors(a: float, b: float, n: int) -> float:
    """Two standard errors of the difference of two top-1 accuracies (in
    %), each over the same ``n`` images, treated as independent binomials."""
    return 2 * math.sqrt(sum(p / 100 * (1 - p / 100) / n for p in (a, b))) * 100


def check_targets(m: dict, counts: dict) -> list:
    """Issue 19's targets against this run's metrics: each with its value,
    reference, margin, whether it is met, and (for top-1 margins) whether the
    margin exceeds two standard errors of the difference. Where the second
    seed ran (``seeded`` keys in ``m``), the row has its numbers too
    (``second_seed``), the margin's mean over both seeds, and is met only
    when both seeds meet it."""
    rows = []
    for key, op, ref_key, margin in TARGETS:
        value = m[key]
        ref = m[ref_key] if ref_key else None
        if ref_key is None:
            goal = margin
        elif op == '<=' and margin == 0.5:
            goal = ref * 0.5
        else:
            goal = ref + margin
        met = value <= goal if op == '<=' else value < goal if op == '<' else value >= goal
        row = dict(
            metric=key,
            value=value,
            op=op,
            reference=ref_key,
            reference_value=ref,
            goal=round(goal, 4),
            met=bool(met))
        if key.endswith('top1') and ref_key and ref_key.endswith('top1'):
            n = counts['cls_val']
            two_se = two_standard_errors(value, ref, n)
            row['two_se'] = round(two_se, 2)
            row['margin_beyond_2se'] = bool(value - ref > two_se)
            if seeded(key) in m and seeded(ref_key) in m:
                value1, ref1 = m[seeded(key)], m[seeded(ref_key)]
                two_se1 = two_standard_errors(value1, ref1, n)
                row['second_seed'] = dict(
                    seed=SECOND_SEED,
                    value=value1,
                    reference_value=ref1,
                    two_se=round(two_se1, 2),
                    margin_beyond_2se=bool(value1 - ref1 > two_se1),
                    met=bool(value1 >= ref1 + margin))
                row['mean_margin'] = round((value - ref + value1 - ref1) / 2, 4)
                row['met'] = row['met'] and row['second_seed']['met']
        rows.append(row)
    return rows


def plot_side_by_side(val_root: str, folders: dict, path: str, per_row: int = 16) -> None:
    """One figure, four rows of images: real val images, their tokenizer
    reconstructions, ADDP samples, predictor-only samples."""
    from PIL import Image, ImageDraw

    from mmaddp.evaluation.generation_metrics import list_image_files
    real = list_image_files(val_root)
    step = max(1, len(real) // per_row)
    real = real[::step][:per_row]
    recon = [osp.join(folders['recon'], 'val', osp.relpath(f, val_root)) for f in real]
    recon = [osp.splitext(f)[0] + '.png' for f in recon]
    rows = [('val images', real), ('tokenizer reconstructions', recon),
            ('ADDP samples', list_image_files(folders['addp'], ['grid.png'])[:per_row]),
            ('token predictor alone (MAGE-style)',
             list_image_files(folders['predictor'], ['grid.png'])[:per_row])]
    size, label_w, pad = 48, 190, 4
    canvas = Image.new('RGB', (label_w + per_row * (size + pad), len(rows) * (size + pad)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, files) in enumerate(rows):
        y = r * (size + pad)
        draw.text((4, y + size // 2 - 6), label, fill=(0, 0, 0))
        for c, f in enumerate(files):
            img = Image.open(f).convert('RGB').resize((size, size), Image.NEAREST)
            canvas.paste(img, (label_w + c * (size + pad), y))
    canvas.save(path)


def render_report(mode, m, bars, targets, seconds, reused, figures, wall, flags) -> str:

    def mark(key):
        return '' if key not in bars else (
            ' (bar >= %g: %s)' % (bars[key]['bar'], 'met' if bars[key]['met'] else 'NOT met'))

    g = 'generation/'
    lines = [
        '# ADDP demo report',
        '',
        f'Mode: {mode}. Everything ran on the bundled data (`make data`), on '
        f'{os.cpu_count()} CPU cores (flags: {", ".join(flags) or "none of note"}).',
        '',
        '## Pretraining',
        '',
        '| stage | metric | value |',
        '|---|---|---|',
        f'| tokenizer | PSNR (dB), val | {m["tokenizer/psnr"]:.2f} |',
        f'| tokenizer | code usage / perplexity | {m["tokenizer/code_usage"]:.3f} / '
        f'{m["tokenizer/perplexity"]:.1f} |',
        f'| tokenizer | demo classifier top-1 on val reconstructions (originals) | '
        f'{m["tokenizer/recon_top1"]:.2f} ({m["cls/top1"]:.2f}) |',
        f'| token predictor | masked-token accuracy (%) | {m["token_predictor/accuracy"]:.2f} '
        f'(most common code: {m["token_predictor/majority_baseline"]:.2f}) |',
        f'| token predictor | NLL of the true masked ids, nats (code frequencies alone) | '
        f'{m["token_predictor/nll"]:.3f} ({m["token_predictor/marginal_nll"]:.3f}) |',
        f'| token predictor | what it knows of a masked id beyond code frequencies, nats '
        f'(ADDP\'s targets can teach no more) | {m["token_predictor/information"]:.3f} |',
        f'| ADDP pretraining | loss, first log -> mean of last 4 | {m["addp/loss_first"]:.3f} -> '
        f'{m["addp/loss_last"]:.3f} |',
        '',
        '## Generation (demo classifier as feature network, against the val images)',
        '',
        '| images | FID | IS | share with p >= 0.9 (%) |',
        '|---|---|---|---|',
    ]
    for name, label in (('addp', 'ADDP samples'),
                        ('predictor', 'token predictor alone, MAGE-style (same steps, seeds)'),
                        ('recon', 'tokenizer reconstructions of the val images (ceiling)'),
                        ('start', 'start image repeated'), ('noise', 'uniform noise'),
                        ('real', 'the val images themselves')):
        lines.append(f'| {label} | {m[g + name + "/fid"]:.2f} | '
                     f'{m[g + name + "/inception_score"]:.2f} | '
                     f'{m[g + name + "/confident_share"]:.1f} |')
    lines += [
        '',
        '## Representation: the ADDP encoder against the same encoder from random weights',
        '',
        'Same recipe, schedule and seed in each row.',
        '',
        '| task | metric | ADDP | random weights | difference |',
        '|---|---|---|---|---|',
    ]
    for label, metric, a, b in (('linear probe (frozen tokens)', 'top-1', 'probe/top1',
                                 'probe_random/top1'),
                                ('fine-tuning, 100 labels per class', 'top-1', 'cls_few/top1',
                                 'cls_few_random/top1'), ('fine-tuning, all labels', 'top-1',
                                                          'cls/top1', 'cls_random/top1'),
                                ('Mask R-CNN', 'box AP50', 'det/bbox_AP50', 'det_random/bbox_AP50'),
                                ('Mask R-CNN', 'mask AP50', 'det/segm_AP50',
                                 'det_random/segm_AP50'), ('UperNet', 'mIoU', 'seg/mIoU',
                                                           'seg_random/mIoU')):
        lines.append(f'| {label} | {metric} | {m[a]:.2f}{mark(a)} | {m[b]:.2f} | '
                     f'{m[a] - m[b]:+.2f} |')
    lines += ['', *render_second_seed(m, targets)]
    lines += [
        '',
        '## Pixel versus token input (same ADDP checkpoint, same schedules)',
        '',
        '| task | metric | pixels | tokens |',
        '|---|---|---|---|',
        f'| classification | top-1 | {m["cls/top1"]:.2f} | {m["cls_token/top1"]:.2f} |',
        f'| detection | box AP50 | {m["det/bbox_AP50"]:.1f} | {m["det_token/bbox_AP50"]:.1f} |',
        f'| instance seg. | mask AP50 | {m["det/segm_AP50"]:.1f} | '
        f'{m["det_token/segm_AP50"]:.1f} |',
        f'| semantic seg. | mIoU | {m["seg/mIoU"]:.2f} | {m["seg_token/mIoU"]:.2f} |',
        '',
        '## Targets (issue 19)',
        '',
        '| metric | value | goal | met | note |',
        '|---|---|---|---|---|',
    ]
    for t in targets:
        ref = f' ({t["reference"]} = {t["reference_value"]:.2f})' if t['reference'] else ''
        note = ''
        if 'two_se' in t:
            note = (f'2 SE of the difference: {t["two_se"]:.2f}; margin beyond it: '
                    f'{"yes" if t["margin_beyond_2se"] else "no"}')
        if 'second_seed' in t:
            s1 = t['second_seed']
            note += (f'; seed {s1["seed"]}: {s1["value"]:.2f} vs {s1["reference_value"]:.2f} '
                     f'({s1["value"] - s1["reference_value"]:+.2f}, 2 SE {s1["two_se"]:.2f}); '
                     f'mean margin {t["mean_margin"]:+.2f}')
        lines.append(f'| {t["metric"]} | {t["value"]:.2f} | {t["op"]} {t["goal"]:.2f}{ref} | '
                     f'{"yes" if t["met"] else "NO"} | {note} |')
    lines += [
        '',
        '## Figures',
        '',
        'Rows: val images, their tokenizer reconstructions, ADDP samples, the token predictor '
        'sampling alone.',
        '',
        f'![side by side]({figures["side_by_side"]})',
        '',
        f'![ADDP samples]({figures["samples"]})',
        '',
        f'![pretraining loss]({figures["loss_curve"]})',
        '',
        '## Wall time per stage',
        '',
        'Seconds of the run that made each stage (stages reused from an earlier run '
        'of the demo are marked).',
        '',
        '| stage | seconds |',
        '|---|---|',
    ]
    lines += [f'| {k} | {v:.0f}{" (reused)" if k in reused else ""} |' for k, v in seconds.items()]
    lines += [
        f'| sum of the stages | {sum(seconds.values()):.0f} |',
        f'| this command, wall clock (stages overlap with --jobs > 1) | {wall:.0f} |', ''
    ]
    return '\n'.join(lines)


def render_second_seed(m, targets) -> list:
    """The report's lines on the second seed: both seeds and their mean for
    each margin it repeated, or why it did not run."""
    lines = [f'### Second seed (seed {SECOND_SEED})', '']
    repeated = [t for t in targets if 'second_seed' in t]
    if not repeated:
        return lines + [
            'Not run: the linear-probe and few-label margins are beyond two standard '
            'errors of their difference, or `--second-seed never`.'
        ]
    lines += [
        'Run because the first seed\'s margin is within two standard errors (or '
        '`--second-seed always`): ADDP pretraining, the random-weight encoder and the '
        f'fine-tuning again, each with seed {SECOND_SEED}.', '',
        '| task | seed | ADDP | random weights | difference | 2 SE |', '|---|---|---|---|---|---|'
    ]
    labels = {'probe/top1': 'linear probe', 'cls_few/top1': 'fine-tuning, 100 labels per class'}
    for t in repeated:
        label, s1 = labels.get(t['metric'], t['metric']), t['second_seed']
        for seed, a, b, two_se in ((0, t['value'], t['reference_value'], t['two_se']),
                                   (s1['seed'], s1['value'], s1['reference_value'], s1['two_se'])):
            lines.append(f'| {label} | {seed} | {a:.2f} | {b:.2f} | {a - b:+.2f} | {two_se:.2f} |')
        mean_a = (t['value'] + s1['value']) / 2
        mean_b = (t['reference_value'] + s1['reference_value']) / 2
        lines.append(f'| {label} | mean | {mean_a:.2f} | {mean_b:.2f} | {t["mean_margin"]:+.2f} '
                     '| - |')
    if seeded('addp/loss_last') in m:
        lines += [
            '', f'ADDP pretraining with seed {SECOND_SEED}: loss {m[seeded("addp/loss_first")]:.3f}'
            f' -> {m[seeded("addp/loss_last")]:.3f}.'
        ]
    return lines


def main():
    parser = argparse.ArgumentParser(description='Run the ADDP demo end to end')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument(
        '--data-root', default='data/demo', help='the bundled data (built here when missing)')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='a few iterations per stage: checks the plumbing, not the numbers')
    parser.add_argument(
        '--jobs',
        type=int,
        default=2,
        help='stages at once, each with cores / jobs threads; 1 runs them '
        'one after the other')
    parser.add_argument(
        '--second-seed',
        choices=SECOND_SEED_MODES,
        default='auto',
        help='repeat the linear-probe and few-label comparisons with a second '
        'seed: where the margin is within two standard errors (auto), always, '
        'or never')
    args = parser.parse_args()
    with tools_stopped_on_failure():
        Demo(
            args.work_dir,
            args.data_root,
            'quick' if args.quick else 'full',
            jobs=args.jobs,
            second_seed=args.second_seed).run()


if __name__ == '__main__':
    main()
