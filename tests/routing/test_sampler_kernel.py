"""The CPU sampler against torch.multinomial, which it replaces: the same index for every row."""

import pytest
import torch

from ho_co.routing.fast import sampler
from ho_co.routing.fast.loop import per_start_rows


@pytest.fixture(scope="module")
def kernel():
    ops = sampler.sampler_kernel()
    assert ops is not None, "the sampling kernel did not build (a C++ compiler and torch's headers are needed)"
    return ops


def rows_of_every_kind(batch, starts, nodes, generator):
    """Log-probabilities [B, S, N]: peaked and flat rows, visited nodes (-inf), tiny probabilities."""
    sharpness = torch.tensor([0.1, 1.0, 5.0, 30.0]).repeat_interleave(-(-batch * starts // 4))[: batch * starts]
    logits = torch.randn(batch * starts, nodes, generator=generator) * sharpness.unsqueeze(1)
    visited = torch.rand(batch * starts, nodes, generator=generator) < torch.rand(batch * starts, 1, generator=generator)
    visited[:, 0] = False  # at least one node left
    logits = logits.masked_fill(visited, float("-inf"))
    return torch.log_softmax(logits, -1).view(batch, starts, nodes)


@pytest.mark.parametrize("nodes", [2, 5, 50, 101])
def test_sampler_draws_what_multinomial_draws(kernel, nodes):
    g = torch.Generator().manual_seed(nodes)
    batch, starts = 16, 24
    logp = rows_of_every_kind(batch, starts, nodes, g)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = per_start_rows(logp).exp().multinomial(1).view(starts, batch).t()
        torch.manual_seed(seed)
        drawn = kernel.sample_rows(logp, sampler.uniforms(starts * batch, nodes, logp.device))
        assert torch.equal(drawn, expected), f"seed {seed}: {(drawn != expected).sum()} rows differ"


def test_sampler_takes_the_first_of_a_row_of_zeros_and_never_a_visited_node(kernel):
    logp = torch.full((1, 2, 4), float("-inf"))
    logp[0, 1, 2] = 0.0  # probability 1 on node 2
    drawn = kernel.sample_rows(logp, torch.rand(2, 4, dtype=torch.float64))
    assert drawn.tolist() == [[0, 2]]
