"""Features of a frozen encoder over a config's data, and the weighted k-NN
classifier that MAE / MAGE-style papers report beside the linear probe.

mmpretrain has no k-NN classification evaluator (its retrieval metrics rank
a gallery; they do not vote on labels), and a vote needs the whole train
split's features at once, which an mmengine ``BaseMetric`` never sees: hence
a function over cached features, written here.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import Runner

from mmaddp.registry import MODELS


def split_loader_cfg(cfg: Config, split: str) -> dict:
    """The config's test loader reading ``split`` ('train' or 'val') of the
    same dataset through the test pipeline (no augmentation).

    ``CustomDataset`` folders are chosen by ``data_prefix``, mmpretrain's
    ``ImageNet`` by ``split``.
    """
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    loader_cfg = cfg.test_dataloader.copy()
    dataset = dict(loader_cfg['dataset'])
    dataset['split' if 'split' in dataset else 'data_prefix'] = split
    loader_cfg.update(dataset=dataset, persistent_workers=False)
    return loader_cfg


def first_per_class(dataset, per_class: int) -> List[int]:
    """Indices of the first ``per_class`` samples of every class (file order)."""
    picked, seen = [], {}
    for i in range(len(dataset)):
        label = int(dataset.get_data_info(i)['gt_label'])
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            picked.append(i)
    return picked


@torch.no_grad()
def extract_features(
    cfg: Config,
    encoder: torch.nn.Module,
    split: str,
    per_class: Optional[int] = None,
    reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen encoder over one split of a classification config.

    Args:
        cfg (Config): a classification config (its test loader and the
            model's data preprocessor are used).
        encoder (nn.Module): a backbone in eval mode; its last output is
            taken.
        split (str): ``'train'`` or ``'val'``.
        per_class (int, optional): only the first ``per_class`` images of each
            class. Defaults to all.
        reduce (callable, optional): maps the encoder's output (B x ...) to
            features; defaults to flattening it.

    Returns:
        tuple[Tensor, Tensor]: features N x D (float32) and labels N (int64).
    """
    loader_cfg = split_loader_cfg(cfg, split)
    if per_class is not None:
        dataset = Runner.build_dataloader(loader_cfg).dataset
        loader_cfg['dataset'] = dict(
            loader_cfg['dataset'], indices=first_per_class(dataset, per_class))
    loader = Runner.build_dataloader(loader_cfg)
    preprocessor = dict(cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {})
    preprocessor.setdefault('type', 'ClsDataPreprocessor')  # ImageClassifier's default
    preprocessor.pop('batch_augments', None)  # features of the images as they are
    preprocessor = MODELS.build(preprocessor)
    feats, labels = [], []
    for batch in loader:
        data = preprocessor(batch, False)
        out = encoder(data['inputs'])[-1]
        out = reduce(out) if reduce is not None else out
        feats.append(out.flatten(1).float())
        labels += [int(s.gt_label) for s in data['data_samples']]
    return torch.cat(feats), torch.tensor(labels, dtype=torch.int64)


@torch.no_grad()
def weighted_knn_scores(train_features: torch.Tensor,
                        train_labels: torch.Tensor,
                        query_features: torch.Tensor,
                        num_classes: int,
                        k: int = 20,
                        temperature: float = 0.07,
                        chunk_size: int = 1024) -> torch.Tensor:
    """Class votes of the ``k`` nearest train features by cosine similarity,
    each weighted by ``exp(similarity / temperature)`` (the weighted k-NN of
    Wu et al. 2018 that DINO, MAE and MAGE report).

    Args:
        train_features (Tensor): N x D.
        train_labels (Tensor): N class indices.
        query_features (Tensor): Q x D.
        num_classes (int): number of classes.
        k (int): neighbours per query (at most N). Defaults to 20.
        temperature (float): softmax temperature of the weights. Defaults to 0.07.
        chunk_size (int): queries per similarity block. Defaults to 1024.

    Returns:
        Tensor: Q x num_classes summed weights (argmax: the prediction).
    """
    if train_features.dim() != 2 or query_features.dim() != 2:
        raise ValueError('features must be N x D and Q x D, got '
                         f'{tuple(train_features.shape)} and {tuple(query_features.shape)}')
    if train_features.shape[1] != query_features.shape[1]:
        raise ValueError(f'train features have {train_features.shape[1]} dims, queries '
                         f'{query_features.shape[1]}')
    if len(train_labels) != len(train_features):
        raise ValueError(f'{len(train_labels)} labels for {len(train_features)} train features')
    if not 1 <= k <= len(train_features):
        raise ValueError(f'k must be in [1, {len(train_features)}] (the train size), got {k}')
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    scores = []
    for start in range(0, len(query_features), chunk_size):
        query = F.normalize(query_features[start:start + chunk_size].float(), dim=1)
        sim, idx = (query @ bank.t()).topk(k, dim=1)
        votes = torch.zeros(len(query), num_classes)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train_features: torch.Tensor,
                 train_labels: torch.Tensor,
                 query_features: torch.Tensor,
                 query_labels: torch.Tensor,
                 num_classes: int,
                 ks: Sequence[int] = (20, ),
                 temperature: float = 0.07) -> Dict[str, float]:
    """Top-1 (and top-5 when there are more than 5 classes) of the weighted
    k-NN for every ``k`` in ``ks``, in percent: ``{'k20/top1': ...}``."""
    result = {}
    for k in ks:
        scores = weighted_knn_scores(train_features, train_labels, query_features, num_classes, k,
                                     temperature)
        ranked = scores.argsort(dim=1, descending=True)
        hits = ranked == query_labels.view(-1, 1)
        result[f'k{k}/top1'] = 100.0 * hits[:, :1].any(1).double().mean().item()
        if num_classes > 5:
            result[f'k{k}/top5'] = 100.0 * hits[:, :5].any(1).double().mean().item()
    return result
