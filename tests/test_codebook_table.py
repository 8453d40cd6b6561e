"""Token tables started from the tokenizer's code vectors
(``codebook_token_table``): the rows keep the codes' geometry and the table's
scale, the release's init stays the default, and checkpoints still win."""
import numpy as np
import pytest
import torch
from test_addp import CODES, tiny_addp
from test_tokenizer_predictor import SMALL_MAGE

from mmaddp.models import TokenPredictor
from mmaddp.models.layers import init_table_from_codebook

TINY_TOKENIZER = dict(
    type='VQTokenizer',
    base_channels=16,
    channel_mults=(1, 2, 2),
    num_res_blocks=1,
    code_dim=8,
    num_codes=64,
    norm_groups=4)


def distance_correlation(rows: torch.Tensor, codes: torch.Tensor) -> float:
    """Correlation of the pairwise distances of ``rows`` with those of the
    per-dimension standardised ``codes`` (numpy, independent of the code)."""
    c = codes.detach().double().numpy()
    c = (c - c.mean(0)) / c.std(0, ddof=1)
    r = rows.detach().double().numpy()
    iu = np.triu_indices(len(c), 1)
    dc = np.linalg.norm(c[:, None] - c[None], axis=-1)[iu]
    dr = np.linalg.norm(r[:, None] - r[None], axis=-1)[iu]
    return float(np.corrcoef(dc, dr)[0, 1])


def test_rows_follow_the_codes_at_the_table_scale():
    torch.manual_seed(0)
    # codes with structure: 4 clusters in 8 dims, unequal scales per dimension
    centres = torch.randn(4, 8) * 3
    codebook = centres.repeat_interleave(16, 0) + 0.3 * torch.randn(64, 8)
    codebook *= torch.linspace(0.1, 5.0, 8)
    table = torch.randn(66, 32) * 0.24
    before = table.clone()
    assert abs(distance_correlation(before[:64], codebook)) < 0.2  # a random table does not
    init_table_from_codebook(table, codebook)
    assert distance_correlation(table[:64], codebook) > 0.9
    # the std the initialiser gave the code rows is kept; class / mask rows untouched
    assert torch.isclose(table[:64].std(), before[:64].std(), rtol=1e-4)
    assert torch.equal(table[64:], before[64:])
    again = before.clone()
    init_table_from_codebook(again, codebook)
    assert torch.equal(again, table)  # seeded: same codebook, same table
    other = before.clone()
    init_table_from_codebook(other, codebook, seed=1)
    assert not torch.equal(other, table)


def test_a_table_shorter_than_the_codebook_is_refused():
    with pytest.raises(ValueError, match='fewer rows than the 64 codes'):
        init_table_from_codebook(torch.zeros(10, 32), torch.randn(64, 8))


def test_predictor_table_from_its_tokenizer(tmp_path):
    torch.manual_seed(0)
    kwargs = dict(arch=SMALL_MAGE, codebook_size=64, num_classes=1, class_id=64, num_tokens=16)
    pred = TokenPredictor(**kwargs, tokenizer=TINY_TOKENIZER, codebook_token_table=True)
    rows = pred.token_emb.word_embeddings.weight[:64]
    # (an untrained tokenizer's codes: uniform noise, so distances vary little)
    assert distance_correlation(rows, pred.tokenizer.codebook) > 0.7
    assert rows.std().item() == pytest.approx(0.02, rel=0.1)  # the release's std is kept
    release = TokenPredictor(**kwargs, tokenizer=TINY_TOKENIZER)  # the default: random rows
    assert abs(
        distance_correlation(release.token_emb.word_embeddings.weight[:64],
                             release.tokenizer.codebook)) < 0.2
    # a checkpoint replaces the rows
    path = tmp_path / 'pred.pth'
    torch.save({'state_dict': release.state_dict()}, path)
    loaded = TokenPredictor(
        **kwargs, tokenizer=TINY_TOKENIZER, codebook_token_table=True, checkpoint=str(path))
    assert torch.equal(loaded.token_emb.word_embeddings.weight,
                       release.token_emb.word_embeddings.weight)
    with pytest.raises(ValueError, match='configure a `tokenizer`'):
        TokenPredictor(**kwargs, codebook_token_table=True)


def test_addp_decoder_table_from_the_codebook(tmp_path):
    model = tiny_addp(codebook_token_table=True)
    table = model.neck.token_emb.weight
    assert distance_correlation(table[:CODES], model.tokenizer.codebook) > 0.7
    assert table[:CODES].std().item() == pytest.approx(0.02, rel=0.1)
    release = tiny_addp()
    assert abs(
        distance_correlation(release.neck.token_emb.weight[:CODES],
                             release.tokenizer.codebook)) < 0.2
    # the trained parts of a checkpoint replace the rows
    path = tmp_path / 'addp.pth'
    torch.save({'state_dict': release.state_dict()}, path)
    resumed = tiny_addp(codebook_token_table=True, checkpoint=str(path))
    assert torch.equal(resumed.neck.token_emb.weight, release.neck.token_emb.weight)
