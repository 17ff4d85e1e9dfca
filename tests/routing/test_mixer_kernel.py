"""The fused MatNet mixer kernel against rl4co's eager `MixedScoresSDPA`: the same attention
output and the same gradients (inputs and all four mixer parameters) to float rounding, over
shapes whose score tiles end mid-row and mid-vector, and the same bits for any thread count."""

import copy

import pytest
import torch
from rl4co.models.zoo.matnet.encoder import MixedScoresSDPA

from ho_co.routing.fast.mixer import FusedMixedScoresSDPA, kernel

pytestmark = pytest.mark.skipif(kernel() is None, reason="no C++ compiler for the mixer kernel")


def case(b, h, m, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    plain = MixedScoresSDPA(h)
    fused = copy.deepcopy(plain)
    fused.__class__ = FusedMixedScoresSDPA
    q, k, v = (torch.randn(b, h, rows, d, generator=g) for rows in (m, n, n))
    dmat = torch.rand(b, m, n, generator=g)
    return plain, fused, q, k, v, dmat


def forward_backward(module, q, k, v, dmat, upstream):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = module(q, k, v, dmat=dmat)
    (out * upstream).sum().backward()
    return out.detach(), [q.grad, k.grad, v.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("shape", [(2, 3, 13, 7, 8), (3, 8, 50, 50, 16), (1, 2, 3, 1100, 4)])
def test_fused_mixer_matches_rl4co_forward_and_backward(shape):
    plain, fused, q, k, v, dmat = case(*shape)
    upstream = torch.randn(shape[0], shape[1], shape[2], shape[4])
    out_plain, grads_plain = forward_backward(plain, q, k, v, dmat, upstream)
    out_fused, grads_fused = forward_backward(fused, q, k, v, dmat, upstream)
    torch.testing.assert_close(out_fused, out_plain, rtol=1e-5, atol=1e-6)
    names = ["q", "k", "v"] + [n for n, _ in plain.named_parameters()]
    for name, a, b in zip(names, grads_fused, grads_plain):
        # the output bias's gradient is 0 in exact arithmetic (softmax ignores a shift): only noise
        floor = 1e-5 * max(g.abs().max().item() for g in grads_plain)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=floor, msg=name)


def test_fused_mixer_gradients_do_not_depend_on_the_thread_count():
    plain, fused, q, k, v, dmat = case(4, 8, 20, 20, 16, seed=1)
    upstream = torch.randn(4, 8, 20, 16)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            fused.zero_grad()
            runs.append(forward_backward(fused, q, k, v, dmat, upstream))
    finally:
        torch.set_num_threads(threads)
    (out_1, grads_1), (out_2, grads_2) = runs
    assert torch.equal(out_1, out_2)
    assert all(torch.equal(a, b) for a, b in zip(grads_1, grads_2))
