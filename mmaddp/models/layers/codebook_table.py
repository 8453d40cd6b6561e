"""Token tables that start from the tokenizer's code vectors.

The MLM layer (:class:`~mmaddp.models.layers.MlmLayer`) scores the codes by
a dot product with the model's token table, *detached* as in the release: the
table learns only where it embeds input tokens, never from the output
logits. At the demo's widths (64-128 for 512 codes) the logits of a random
table are stuck in a random low-dimensional subspace that training never
aligns with what the codes look like, and the targets are fitted slowly
(measured: docs/demo_schedules.md; the release's widths, 768 / 1024, were
not measured). Starting the code rows from the tokenizer's own code vectors
gives codes that look alike nearby rows from the first step. mmengine's
initialisers address one module at a time and cannot read another model's
codebook, so this is written here.
"""
import torch


@torch.no_grad()
def init_table_from_codebook(table: torch.Tensor, codebook: torch.Tensor, seed: int = 0) -> None:
    """Overwrite the first K rows of ``table`` with the code vectors.

    Every code dimension is standardised, the K x C result is mapped to the
    table's width D by a fixed random Gaussian matrix C x D (seeded, so the
    same codebook gives the same table; distances between codes are kept up
    to a common scale), and the rows are rescaled to the std the K rows had
    before, so the logits keep the scale the table's initialiser chose.
    Rows after K (class and mask ids) are left as they are.

    Args:
        table (Tensor): the token table, V x D with V >= K (changed in place).
        codebook (Tensor): the tokenizer's code vectors, K x C.
        seed (int): seed of the projection. Defaults to 0.

    Raises:
        ValueError: when the table has fewer rows than the codebook.
    """
    num_codes, code_dim = codebook.shape
    if table.dim() != 2 or table.shape[0] < num_codes:
        raise ValueError(f'token table {tuple(table.shape)} has fewer rows than the '
                         f'{num_codes} codes of the codebook')
    std = table[:num_codes].float().std()
    codes = codebook.detach().float().cpu()
    codes = (codes - codes.mean(0)) / codes.std(0).clamp_min(1e-6)
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(code_dim, table.shape[1], generator=generator)
    rows = codes @ projection
    rows = rows / rows.std() * std
    table[:num_codes] = rows.to(table.device, table.dtype)
