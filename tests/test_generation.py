"""ADDP.generate: the schedule of revealed positions, fixed reveals, seeds,
and no dataset anywhere."""
import math

import pytest
import torch
from test_addp import L, tiny_addp


@pytest.fixture(scope='module')
def model():
    return tiny_addp().eval()


@pytest.mark.parametrize('schedule,steps', [('cosine', 6), ('linear', 4)])
def test_masked_counts_follow_schedule(model, schedule, steps):
    images, trace = model.generate(3, steps=steps, schedule=schedule, seed=0, return_trace=True)
    assert images.shape == (3, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    previous = L
    for step, state in enumerate(trace):
        s = (step + 1) / steps
        frac = math.cos(math.pi / 2 * s) if schedule == 'cosine' else 1 - s
        expect = 0 if step == steps - 1 else max(1, min(math.ceil(L * frac), previous - 1))
        assert (state['mask'].sum(1) == expect).all(), step
        previous = expect


def test_revealed_positions_never_change(model):
    images, trace = model.generate(2, steps=8, seed=1, return_trace=True)
    final = trace[-1]
    assert not final['mask'].any()  # the last step reveals everything
    expect = model.tokenizer.decode_ids(final['ids'].view(2, 4, 4)).clamp(0, 1)
    torch.testing.assert_close(images, expect)
    for before, after in zip(trace, trace[1:]):
        revealed = ~before['mask']
        assert not (after['mask'] & revealed).any()
        assert torch.equal(after['ids'][revealed], before['ids'][revealed])


def test_seeds(model):
    a = model.generate(2, steps=4, seed=3)
    b = model.generate(2, steps=4, seed=3)
    c = model.generate(2, steps=4, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_start_image_needs_no_data(model):
    """The start is the decode of the fully masked prediction: computed from
    the model alone, identical for all samples, cached."""
    start = model.start_pixels()
    assert start.shape == (1, 3, 32, 32) and model.start_pixels() is start
    ids = torch.randint(0, 64, (1, L))
    probs = model.token_predictor.predict_probs(ids, torch.ones(1, L, dtype=torch.bool))
    expect = model.tokenizer.decode(model.tokenizer.soft_embed(probs.view(1, 4, 4, -1)))
    torch.testing.assert_close(start, expect.clamp(0, 1))
    with pytest.raises(ValueError, match='schedule'):
        model.generate(1, schedule='square')


def test_release_start_reads_the_given_images(model):
    """``start_images`` replaces the first step's pixels only: the encoder
    reads them at the first prediction (the start image otherwise), passing
    the start image explicitly gives today's samples bit for bit, and a
    wrong size is refused."""
    from unittest import mock
    seen = []
    real = model.decode_logits

    def spy(pixels, ids, mask):
        seen.append((pixels.clone(), mask.clone()))
        return real(pixels, ids, mask)

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with mock.patch.object(model, 'decode_logits', spy):
        default = model.generate(3, steps=3, seed=5)
        first_default = seen[0]
        seen.clear()
        model.generate(3, steps=3, seed=5, start_images=images)
    assert torch.equal(first_default[0], model.start_pixels().expand(3, -1, -1, -1))
    assert torch.equal(seen[0][0], images) and seen[0][1].all()  # every token masked
    assert not torch.equal(seen[1][0], images)  # later steps read decodes
    start = model.start_pixels().expand(3, -1, -1, -1).clone()
    assert torch.equal(model.generate(3, steps=3, seed=5, start_images=start), default)
    with pytest.raises(ValueError, match=r'start_images must be \(3, 3, 32, 32\)'):
        model.generate(3, steps=3, seed=5, start_images=images[:, :, :16, :16])


def test_predictor_alone_samples_mage_style(model):
    """The token predictor sampling by itself (the baseline ADDP must beat)
    runs the same sampler: the same masked counts per step, revealed ids kept,
    each sample from its own seed, and the final ids decoded by the tokenizer."""
    from mmaddp.models.diffusion import make_generators, sample_ids
    predictor = model.token_predictor
    steps, seen = 6, []

    def record(ids, masked, probs):
        seen.append((ids.clone(), masked.clone()))

    ids = sample_ids(
        predictor.predict_probs,
        3,
        L,
        steps,
        make_generators(3, 'cpu', seed=0),
        'cpu',
        on_step=record)
    addp_images, addp_trace = model.generate(3, steps=steps, seed=0, return_trace=True)
    for (_, masked), state in zip(seen, addp_trace):
        assert torch.equal(masked.sum(1), state['mask'].sum(1))  # same reveal schedule
    for (before_ids, before), (after_ids, after) in zip(seen, seen[1:]):
        assert torch.equal(after_ids[~before], before_ids[~before])
    assert not seen[-1][1].any() and torch.equal(seen[-1][0], ids)
    # the predictor reads ids, not ADDP's pixels: its draws differ from ADDP's
    assert not torch.equal(ids, addp_trace[-1]['ids'])

    # as tools/generate.py --sampler predictor builds it: the tokenizer held beside it
    predictor.hold_frozen(tokenizer=model.tokenizer)
    try:
        a = predictor.generate(3, steps=steps, seeds=[5, 6, 7])
        b = predictor.generate(2, steps=steps, seeds=[6, 7])
        got_ids = predictor.generate(3, steps=steps, seeds=[5, 6, 7], return_ids=True)
    finally:
        predictor.frozen_parts.pop('tokenizer')
    torch.testing.assert_close(a[1:], b)  # a sample does not depend on its batch mates
    expect = model.tokenizer.decode_ids(got_ids.view(3, 4, 4)).float().clamp(0, 1)
    torch.testing.assert_close(a, expect)
    with pytest.raises(RuntimeError, match='tokenizer'):
        predictor.generate(1, steps=2)
