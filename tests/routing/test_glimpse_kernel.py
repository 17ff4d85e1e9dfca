"""The CPU glimpse-attention kernel against aten's flash attention, which it replaces."""

import pytest
import torch

from ho_co.routing.fast import glimpse

aten = torch.ops.aten


def pointer_layout(batch, rows, heads, width, scale=1.0):
    """[B, H, R, d] views of [B, R, H * d], as the pointer's queries, keys and values are."""
    return (torch.randn(batch, rows, heads * width) * scale).unflatten(-1, (heads, width)).transpose(1, 2)


def visited_mask(batch, rows, keys, generator):
    """Additive masks [B, 1, R, N]: a random share of keys at -inf, key 0 always open."""
    blocked = torch.rand(batch, rows, keys, generator=generator) < torch.rand(batch, rows, 1, generator=generator)
    blocked[..., 0] = False
    return torch.zeros(batch, rows, keys).masked_fill_(blocked, float("-inf")).unsqueeze(1)


@pytest.fixture(scope="module")
def kernel():
    ops = glimpse.glimpse_kernel()
    assert ops is not None, "the glimpse kernel did not build (a C++ compiler and torch's headers are needed)"
    return ops


@pytest.mark.parametrize("width", [8, 16, 32, 64])
@pytest.mark.parametrize("keys, rows", [(50, 50), (7, 13), (13, 97)])
def test_forward_and_backward_match_aten_flash_attention(kernel, width, keys, rows):
    g = torch.Generator().manual_seed(keys * 100 + width)
    torch.manual_seed(keys * 100 + width)
    q, k, v = pointer_layout(3, rows, 4, width, 2.0), pointer_layout(3, keys, 4, width), pointer_layout(3, keys, 4, width)
    mask = visited_mask(3, rows, keys, g)
    out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=mask)[:2]
    mine_out, mine_lse = glimpse.flash_forward(q, k, v, mask)
    torch.testing.assert_close(mine_out, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine_lse, lse, rtol=1e-5, atol=1e-5)
    assert mine_out.transpose(1, 2).is_contiguous()  # [B, S, H, d]: a free reshape to [B, S, H * d]

    grad_out = pointer_layout(3, rows, 4, width)
    expected = aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, k, v, out, lse, 0.0, False, attn_mask=mask)
    for mine, theirs in zip(glimpse.flash_backward(grad_out, q, k, v, mask, out, lse), expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_a_row_with_every_key_masked_gives_zeros_not_nans(kernel):
    q, k, v = pointer_layout(2, 5, 2, 16), pointer_layout(2, 6, 2, 16), pointer_layout(2, 6, 2, 16)
    mask = torch.zeros(2, 1, 5, 6)
    mask[1, 0, 3] = float("-inf")
    out, lse = kernel.glimpse_forward(q, k, v, mask, 0.25)
    assert torch.all(out[1, :, 3] == 0) and torch.all(lse[1, :, 3] == float("-inf"))
    assert torch.isfinite(out).all() and torch.isfinite(lse[0]).all()
    dq, dk, dv = kernel.glimpse_backward(torch.ones_like(out), q, k, v, mask, out, lse, 0.25)
    assert torch.all(dq[1, :, 3] == 0) and all(torch.isfinite(t).all() for t in (dq, dk, dv))


def test_other_head_widths_and_layouts_take_aten(kernel):
    q = pointer_layout(2, 5, 2, 12)
    assert not glimpse.glimpse_applies(q)
    wide = pointer_layout(2, 5, 2, 16)
    assert glimpse.glimpse_applies(wide) and not glimpse.glimpse_applies(wide.transpose(-1, -2).contiguous().transpose(-1, -2))
    k, v = pointer_layout(2, 4, 2, 12), pointer_layout(2, 4, 2, 12)
    mask = torch.zeros(2, 1, 5, 4)
    out, _ = glimpse.flash_forward(q, k, v, mask)  # aten's kernel, same values
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    with pytest.raises(RuntimeError, match="head width 8, 16, 32 or 64"):
        kernel.glimpse_forward(q, k, v, mask, 0.25)


def test_the_switch_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv(glimpse.GLIMPSE_SWITCH, "0")
    glimpse.glimpse_kernel.cache_clear()
    try:
        assert glimpse.glimpse_kernel() is None and not glimpse.glimpse_applies(pointer_layout(1, 3, 2, 16))
    finally:
        monkeypatch.undo()
        glimpse.glimpse_kernel.cache_clear()


def split_case(batch, heads, starts, per, keys, width, seed):
    """Query parts, keys, values, each row's current node and a mask: rows (start, step) with the
    query q_first[start] + q_cur[node], as MatNet's pointer has them."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    q_first, q_cur = torch.randn(batch, heads, starts, width), torch.randn(batch, heads, keys, width)
    k, v = pointer_layout(batch, keys, heads, width), pointer_layout(batch, keys, heads, width)
    nodes = torch.randint(0, keys, (batch, starts * per), generator=g)
    return q_first, q_cur, k, v, nodes, visited_mask(batch, starts * per, keys, g)


def per_row_query(q_first, q_cur, nodes, per):
    b, h, _, d = q_first.shape
    start = torch.arange(nodes.size(1)) // per
    return q_first[:, :, start] + q_cur.gather(2, nodes[:, None, :, None].expand(b, h, -1, d))


@pytest.mark.parametrize("width", [8, 16, 64])
@pytest.mark.parametrize("starts, per, keys", [(50, 48, 50), (5, 1, 7), (13, 4, 13)])
def test_split_scores_give_the_attention_of_the_summed_query(kernel, width, starts, per, keys):
    q_first, q_cur, k, v, nodes, mask = split_case(2, 3, starts, per, keys, width, seed=starts * per + width)
    tensors = [t.requires_grad_() for t in (q_first, q_cur, k, v)]
    scale = width ** -0.5
    expected = torch.nn.functional.scaled_dot_product_attention(per_row_query(q_first, q_cur, nodes, per), k, v,
                                                                attn_mask=mask)
    score_first, score_cur = q_first @ k.transpose(-1, -2) * scale, q_cur @ k.transpose(-1, -2) * scale
    out, lse = kernel.split_glimpse_forward(score_first.detach(), score_cur.detach(), nodes, v.detach(), mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.transpose(1, 2).is_contiguous()  # [B, R, H, d], as the rollout stacks it

    grad_out = torch.randn_like(out)
    theirs = torch.autograd.grad((expected * grad_out).sum(), tensors)
    d_first, d_cur, d_values = kernel.split_glimpse_backward(grad_out, score_first.detach(), score_cur.detach(), nodes,
                                                             v.detach(), mask, out, lse)
    mine = torch.autograd.grad((score_first * d_first).sum() + (score_cur * d_cur).sum(), tensors[:3])
    for name, a, b in zip(("q_first", "q_cur", "k", "v"), (*mine, d_values), theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=name)


def test_split_rows_with_every_key_masked_give_zeros(kernel):
    q_first, q_cur, k, v, nodes, mask = split_case(2, 2, 3, 2, 6, 16, seed=1)
    mask[1, 0, 4] = float("-inf")
    score_first, score_cur = q_first @ k.transpose(-1, -2), q_cur @ k.transpose(-1, -2)
    out, lse = kernel.split_glimpse_forward(score_first, score_cur, nodes, v, mask)
    assert torch.all(out[1, :, 4] == 0) and torch.all(lse[1, :, 4] == float("-inf"))
    grads = kernel.split_glimpse_backward(torch.ones_like(out), score_first, score_cur, nodes, v, mask, out, lse)
    assert all(torch.isfinite(t).all() for t in (out, *grads))


def test_split_attention_refuses_bad_nodes_and_row_counts(kernel):
    q_first, q_cur, k, v, nodes, mask = split_case(1, 2, 3, 2, 6, 16, seed=2)
    score_first, score_cur = q_first @ k.transpose(-1, -2), q_cur @ k.transpose(-1, -2)
    with pytest.raises(RuntimeError, match=r"node indices must lie in \[0, 6\)"):
        kernel.split_glimpse_forward(score_first, score_cur, nodes + 6, v, mask)
    with pytest.raises(RuntimeError, match="multiple of the 3 starts"):
        kernel.split_glimpse_forward(score_first, score_cur, nodes[:, :5].contiguous(), v, mask[:, :, :5])
    with pytest.raises(RuntimeError, match="score tables must be contiguous"):
        kernel.split_glimpse_forward(score_first.transpose(-1, -2), score_cur, nodes, v, mask)
