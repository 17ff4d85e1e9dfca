"""The CPU pointer-tail kernel against the eager ops it replaces (clip, mask, temperature, log-softmax)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ho_co.routing.fast import pointer_tail as tail


@pytest.fixture(scope="module")
def kernel():
    ops = tail.pointer_kernel()
    assert ops is not None, "the pointer-tail kernel did not build (a C++ compiler and torch's headers are needed)"
    return ops


def logits_and_mask(rows, keys, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, rows, keys, generator=g) * 4
    blocked = torch.rand(3, rows, keys, generator=g) < 0.5
    blocked[..., -1] = False  # one open key per row
    return logits, torch.zeros(3, rows, keys).masked_fill_(blocked, float("-inf"))


def eager_logp(logits, mask, clip, temperature):
    return F.log_softmax(tail.masked_scores(logits, mask, clip, temperature), -1)


@pytest.mark.parametrize("keys", [1, 7, 8, 13, 50])
@pytest.mark.parametrize("clip, temperature", [(10.0, 1.0), (0.0, 1.0), (10.0, 1.7)])
def test_log_softmax_matches_eager(kernel, keys, clip, temperature):
    logits, mask = logits_and_mask(11, keys, keys)
    mine = kernel.pointer_log_softmax(logits, mask, clip, temperature)
    expected = eager_logp(logits, mask, clip, temperature)
    assert torch.equal(torch.isinf(mine), torch.isinf(expected))
    open_ = mask == 0
    torch.testing.assert_close(mine[open_], expected[open_], rtol=0, atol=1e-5)


def test_a_row_with_every_key_masked_is_nan_as_in_torch(kernel):
    logits, mask = logits_and_mask(4, 9, 0)
    mask[1, 2] = float("-inf")
    assert eager_logp(logits, mask, 10.0, 1.0)[1, 2].isnan().all()
    assert kernel.pointer_log_softmax(logits, mask, 10.0, 1.0)[1, 2].isnan().all()


@pytest.mark.parametrize("keys", [5, 50])
@pytest.mark.parametrize("clip, temperature", [(10.0, 1.0), (0.0, 1.0), (10.0, 0.8)])
def test_chosen_logp_and_its_gradient_match_eager_autograd(keys, clip, temperature):
    logits, mask = logits_and_mask(40, keys, 7 * keys)
    chosen = torch.where(mask == 0, torch.rand(mask.shape), -1.0).argmax(-1)
    grad = torch.randn(chosen.shape)
    mine_in, eager_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    mine = tail.ChosenLogp.apply(mine_in, mask, chosen, clip, temperature)
    expected = eager_logp(eager_in, mask, clip, temperature).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(mine, expected, rtol=0, atol=1e-5)
    mine.backward(grad)
    expected.backward(grad)
    # within 1e-5 of the largest gradient: near saturation 1 - tanh^2 magnifies tanh's last-bit difference
    torch.testing.assert_close(mine_in.grad, eager_in.grad, rtol=0, atol=1e-5 * eager_in.grad.abs().max().item())


def test_chosen_logp_refuses_an_index_out_of_range(kernel):
    logits, mask = logits_and_mask(2, 6, 1)
    with pytest.raises(RuntimeError, match="out of range"):
        kernel.pointer_chosen_forward(logits, mask, torch.full((3, 2), 6), 10.0, 1.0)


def test_tanh_is_within_two_ulp_and_keeps_nan_and_signs(kernel):
    """The kernel's tanh (returned by the chosen-logp forward) over a dense range and specials."""
    x = torch.cat([torch.linspace(-12, 12, 400_000), torch.randn(99_990) * 1e-3,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, 100.0, -100.0, float("inf"), float("-inf"), float("nan")]),
                   torch.zeros(1)]).view(-1, 1000)
    tanh = kernel.pointer_chosen_forward(x, torch.zeros_like(x), torch.zeros(x.size(0), dtype=torch.long), 10.0, 1.0)[2]
    x, tanh = x.flatten(), tanh.flatten()
    exact = torch.tanh(x.double())
    finite = torch.isfinite(x)
    ulp = torch.from_numpy(np.spacing(np.abs(exact.float().numpy()))).double()
    assert ((tanh.double() - exact).abs() / ulp)[finite & (exact != 0)].max() <= 2.0
    assert torch.equal(tanh[~x.isnan()].signbit(), x[~x.isnan()].signbit())
    assert tanh[x.isinf()].abs().eq(1).all() and tanh[x.isnan()].isnan().all()


def test_the_switch_turns_the_kernel_off(monkeypatch):
    logits, mask = logits_and_mask(2, 5, 3)
    monkeypatch.setenv(tail.POINTER_SWITCH, "0")
    tail.pointer_kernel.cache_clear()
    try:
        assert tail.pointer_kernel() is None and not tail.pointer_tail_applies(logits, mask)
    finally:
        monkeypatch.undo()
        tail.pointer_kernel.cache_clear()
    assert tail.pointer_tail_applies(logits, mask) and not tail.pointer_tail_applies(logits, mask.transpose(0, 1))
