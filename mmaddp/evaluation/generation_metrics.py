"""FID and Inception Score of generated images, with two kinds of feature network.

* ``inception``: torch-fidelity's ``inception-v3-compat`` (the TF-Inception
  port that the published FID / IS numbers use), read from a local weights
  file. Nothing is ever downloaded: a missing file is an error that says where
  to put it. :func:`torch_fidelity.calculate_metrics` computes both metrics.
* ``classifier``: an mmpretrain classifier built from a config (+ checkpoint),
  for instance the tiny classifier trained on the bundled classification set.
  Its pooled backbone / neck features give the FID and its class
  probabilities the IS, both computed here (:func:`frechet_distance`,
  :func:`inception_score`), and the share of samples it assigns a class
  with p >= 0.9 (:func:`confident_share`). Numbers are comparable only between runs that use
  the same network.

Images enter as a folder (searched recursively for PNG / JPEG files), a uint8
tensor N x 3 x H x W (RGB), or a list of such tensors.
"""
import os
import os.path as osp
from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
ImageSource = Union[str, torch.Tensor, Sequence[torch.Tensor]]


# ------------------------------------------------------------------ metrics
def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, unbiased) of N x D features."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f'need N x D features with N >= 2 for a covariance, got {feats.shape}')
    return feats.mean(0), np.cov(feats, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two Gaussians, in float64:
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    ``tr((S1 S2)^(1/2))`` is taken as the sum of the square roots of the
    eigenvalues of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (same
    spectrum as S1 S2), which stays real where ``scipy.linalg.sqrtm`` of the
    non-symmetric product can turn complex for rank-deficient covariances.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f'statistics do not match: means {mu1.shape} / {mu2.shape}, '
                         f'covariances {sigma1.shape} / {sigma2.shape}')
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(value, 0.0))


def inception_score(probs, splits: int = 1) -> Tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) of N x C class probabilities, as the
    mean and standard deviation over ``splits`` consecutive parts."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f'need N x C probabilities, got {p.shape}')
    if np.any(p < 0) or not np.allclose(p.sum(1), 1, atol=1e-4):
        raise ValueError('inception_score needs probabilities (rows >= 0 summing to 1)')
    splits = max(1, min(int(splits), p.shape[0]))
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        log_ratio = np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None))
        kl = np.sum(part * log_ratio, 1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def confident_share(probs, threshold: float = 0.9) -> float:
    """Percentage of the N x C class probabilities whose largest entry is at
    least ``threshold``: samples the classifier assigns a class with
    confidence (the share of recognisable samples)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f'need N x C probabilities, got {p.shape}')
    return float(100.0 * (p.max(1) >= threshold).mean())


# ------------------------------------------------------------------- images
def list_image_files(folder: str, exclude: Sequence[str] = ()) -> List[str]:
    """PNG / JPEG files under ``folder`` (recursive, sorted), leaving out the
    file names in ``exclude`` (e.g. ``grid.png`` of ``tools/generate.py``)."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Image folder not found: {folder}')
    files = []
    for root, _, names in os.walk(folder):
        files += [
            osp.join(root, n) for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS) and n not in exclude
        ]
    if not files:
        raise ValueError(f'No PNG or JPEG images in {folder}')
    return sorted(files)


class UInt8Images(Dataset):
    """Images as uint8 RGB tensors 3 x H x W (what torch-fidelity expects)
    from a folder, a uint8 tensor N x 3 x H x W or a list of 3 x H x W ones."""

    def __init__(self, source: ImageSource, exclude: Sequence[str] = ()):
        if isinstance(source, (str, os.PathLike)):
            self.files, self.images = list_image_files(str(source), exclude), None
        else:
            images = list(source)
            if not images:
                raise ValueError('No images given')
            for image in images:
                if not (torch.is_tensor(image) and image.dtype == torch.uint8 and image.dim() == 3
                        and image.shape[0] == 3):
                    raise ValueError('image tensors must be uint8 RGB 3 x H x W, got '
                                     f'{getattr(image, "dtype", type(image))} '
                                     f'{tuple(getattr(image, "shape", ()))}')
            self.files, self.images = None, images

    def __len__(self):
        return len(self.files) if self.images is None else len(self.images)

    def __getitem__(self, index):
        if self.images is not None:
            return self.images[index].cpu()
        from PIL import Image
        try:
            with Image.open(self.files[index]) as img:
                array = np.array(img.convert('RGB'))
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors on bad bytes
            raise ValueError(f'image {self.files[index]} cannot be read (corrupt or '
                             f'truncated?): {err}') from err
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _stack_same_size(batch: List[torch.Tensor]) -> torch.Tensor:
    sizes = {tuple(x.shape[-2:]) for x in batch}
    if len(sizes) > 1:
        raise ValueError(f'images of different sizes {sorted(sizes)}: set input_size of the '
                         'classifier feature net to resize them')
    return torch.stack(batch)


# ------------------------------------------------------------ feature nets
class GenerationFeatureNet(ABC):
    """Computes ``dict(fid=..., is_mean=..., is_std=...)`` of generated
    ``samples`` against ``reference`` images.

    ``prepare_reference`` turns a reference source into whatever the net
    reuses between evaluations (statistics for the classifier), so that the
    reference set is read once by :class:`GenerationEvalHook`.
    """

    def prepare_reference(self, reference: ImageSource):
        return reference

    @abstractmethod
    def compute_metrics(self, samples: ImageSource, reference) -> Dict[str, float]:
        """FID / IS of ``samples`` against a prepared ``reference``."""


class InceptionFeatureNet(GenerationFeatureNet):
    """torch-fidelity's ``inception-v3-compat`` from a local weights file.

    Args:
        weights_path (str): the ``weights-inception-2015-12-05-6726825d.pth``
            file that torch-fidelity would fetch from its release page.
        batch_size (int): images per Inception forward.
        isc_splits (int): IS splits (torch-fidelity's default 10; fewer when
            there are fewer samples).
        cuda (bool, optional): run on the GPU; default: when one is available.
        exclude (list[str]): file names left out of sample folders.
        **fidelity_kwargs: more ``calculate_metrics`` options, e.g.
            ``save_cpu_ram=True`` (no loader worker processes).
    """

    def __init__(self,
                 weights_path: Optional[str],
                 batch_size: int = 64,
                 isc_splits: int = 10,
                 cuda: Optional[bool] = None,
                 exclude: Sequence[str] = (),
                 **fidelity_kwargs):
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
        if not weights_path or not osp.isfile(weights_path):
            raise FileNotFoundError(
                f'Inception weights not found at {weights_path!r}. FID/IS with the '
                "'inception-v3-compat' network need the file torch-fidelity downloads from "
                f'{URL_INCEPTION_V3} ({osp.basename(URL_INCEPTION_V3)}); nothing is downloaded '
                'here. Fetch it on a machine with internet access, copy it to that path (or '
                'point feature_extractor_weights_path / --weights at it), or use a classifier '
                'feature net instead.')
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.isc_splits = isc_splits
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.exclude = tuple(exclude)
        self.fidelity_kwargs = fidelity_kwargs

    def compute_metrics(self, samples: ImageSource, reference) -> Dict[str, float]:
        import torch_fidelity
        samples = samples if isinstance(samples, Dataset) else UInt8Images(samples, self.exclude)
        reference = reference if isinstance(reference, Dataset) else UInt8Images(reference)
        try:
            out = torch_fidelity.calculate_metrics(
                input1=samples,
                input2=reference,
                fid=True,
                isc=True,
                feature_extractor='inception-v3-compat',
                feature_extractor_weights_path=self.weights_path,
                isc_splits=max(1, min(self.isc_splits, len(samples))),
                batch_size=self.batch_size,
                cuda=self.cuda,
                cache=False,
                verbose=False,
                samples_shuffle=False,
                datasets_download=False,
                **self.fidelity_kwargs)
        except RuntimeError as err:
            if 'state_dict' in str(err):
                raise ValueError(f'{self.weights_path} is not the inception-v3-compat weights '
                                 f'file of torch-fidelity: {str(err).splitlines()[0]}') from err
            raise
        return dict(
            fid=float(out['frechet_inception_distance']),
            is_mean=float(out['inception_score_mean']),
            is_std=float(out['inception_score_std']))


class ClassifierFeatureNet(GenerationFeatureNet):
    """An mmpretrain classifier (``extract_feat`` + ``head``) as feature net.

    Args:
        config (str | Config | dict): its config (file, object or dict).
        checkpoint (str, optional): its weights (a runner checkpoint or a bare
            state dict). Without one the network keeps its initialisation,
            which is only useful for tests.
        input_size (int | tuple, optional): resize images to this size
            (bilinear) before the network; needed when sizes differ.
        batch_size (int): images per forward.
        is_splits (int): IS splits.
        device: default: CUDA when available, else CPU.
    """

    def __init__(self,
                 config,
                 checkpoint: Optional[str] = None,
                 input_size: Union[int, Sequence[int], None] = None,
                 batch_size: int = 64,
                 is_splits: int = 10,
                 device=None,
                 exclude: Sequence[str] = ()):
        self.device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        self.model = build_classifier(config, checkpoint).to(self.device).eval()
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.batch_size = batch_size
        self.is_splits = is_splits
        self.exclude = tuple(exclude)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB images B x 3 x H x W -> (pooled features B x D, class
        probabilities B x C), both float64 on the CPU."""
        x = images.to(self.device).float()
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode='bilinear', align_corners=False)
        preprocessor = self.model.data_preprocessor
        if getattr(preprocessor, 'to_rgb', False) or getattr(preprocessor, '_channel_conversion',
                                                             False):
            x = x.flip(1)  # it expects BGR (as loaded by cv2) and converts to RGB
        x = preprocessor(dict(inputs=x), False)['inputs']
        feats = self.model.extract_feat(x)
        logits = self.model.head(feats)
        if isinstance(logits, (tuple, list)):
            logits = logits[-1]
        pooled = feats[-1] if isinstance(feats, (tuple, list)) else feats
        if isinstance(pooled, (tuple, list)):
            pooled = pooled[-1]
        if pooled.dim() == 4:  # B x C x H x W maps
            pooled = pooled.mean((2, 3))
        elif pooled.dim() == 3:  # B x N x C tokens
            pooled = pooled.mean(1)
        return pooled.double().cpu(), logits.double().softmax(-1).cpu()

    def _extract(self, source) -> Tuple[np.ndarray, np.ndarray]:
        dataset = source if isinstance(source, Dataset) else UInt8Images(source, self.exclude)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=0,
            collate_fn=_stack_same_size)
        feats, probs = zip(*(self.features(batch) for batch in loader))
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()

    def prepare_reference(self, reference):
        if isinstance(reference, tuple) and len(reference) == 2 and isinstance(
                reference[0], np.ndarray):
            return reference
        feats, _ = self._extract(reference)
        return feature_statistics(feats)

    def compute_metrics(self, samples: ImageSource, reference) -> Dict[str, float]:
        mu_ref, sigma_ref = self.prepare_reference(reference)
        feats, probs = self._extract(samples)
        mu, sigma = feature_statistics(feats)
        is_mean, is_std = inception_score(probs, self.is_splits)
        return dict(
            fid=frechet_distance(mu, sigma, mu_ref, sigma_ref),
            is_mean=is_mean,
            is_std=is_std,
            confident_share=confident_share(probs))


def build_classifier(config, checkpoint: Optional[str] = None) -> torch.nn.Module:
    """Build the ``model`` of an mmpretrain config in that config's scope and
    load ``checkpoint`` (all of the model's weights must be in it)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmaddp.checkpoint import load_state_into, read_state_dict
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'Feature network config not found: {config}')
        config = Config.fromfile(str(config))
    elif isinstance(config, dict) and not isinstance(config, Config):
        config = Config(config)
    model_cfg = config.get('model', None)
    if not model_cfg:
        raise ValueError('The feature network config has no model')
    model_cfg = dict(model_cfg)
    if config.get('data_preprocessor', None) is not None:
        model_cfg.setdefault('data_preprocessor', dict(config.data_preprocessor))
    with DefaultScope.overwrite_default_scope(config.get('default_scope', 'mmpretrain')):
        model = MODELS.build(model_cfg)
    if not (callable(getattr(model, 'extract_feat', None)) and hasattr(model, 'head')):
        raise ValueError(f'The feature network ({type(model).__name__}) must be a classifier '
                         'with extract_feat and a head (e.g. mmpretrain ImageClassifier)')
    if checkpoint is None:
        model.init_weights()
        return model
    state = read_state_dict(checkpoint)
    own = model.state_dict()
    if not any(k in own for k in state):
        raise ValueError(f'Checkpoint {checkpoint} is not a checkpoint of this feature network '
                         f'({type(model).__name__}): none of its keys match')
    result = load_state_into(model, state, f'Checkpoint {checkpoint}')
    if result.missing_keys:
        raise ValueError(f'Checkpoint {checkpoint} lacks weights of the feature network: '
                         f'{result.missing_keys[:5]} ({len(result.missing_keys)} missing)')
    return model


def build_feature_net(cfg: dict) -> GenerationFeatureNet:
    """``dict(type='inception', weights_path=...)`` or ``dict(type='classifier',
    config=..., checkpoint=..., input_size=...)``; other keys go to the class."""
    cfg = dict(cfg)
    kind = cfg.pop('type', None)
    if kind == 'inception':
        path = cfg.pop('weights_path', cfg.pop('feature_extractor_weights_path', None))
        return InceptionFeatureNet(path, **cfg)
    if kind == 'classifier':
        if 'config' not in cfg:
            raise ValueError("a 'classifier' feature net needs config=<mmpretrain config>")
        return ClassifierFeatureNet(**cfg)
    raise ValueError(f"feature net type must be 'inception' or 'classifier', got {kind!r}")
