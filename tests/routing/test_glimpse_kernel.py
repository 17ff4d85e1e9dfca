"""The CPU glimpse-attention kernel against aten's flash attention, which it replaces."""

import pytest
import torch

from ho_co.routing import fast

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
    ops = fast.glimpse_kernel()
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
    mine_out, mine_lse = fast.flash_forward(q, k, v, mask)
    torch.testing.assert_close(mine_out, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine_lse, lse, rtol=1e-5, atol=1e-5)
    assert mine_out.transpose(1, 2).is_contiguous()  # [B, S, H, d]: a free reshape to [B, S, H * d]

    grad_out = pointer_layout(3, rows, 4, width)
    expected = aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, k, v, out, lse, 0.0, False, attn_mask=mask)
    for mine, theirs in zip(fast.flash_backward(grad_out, q, k, v, mask, out, lse), expected):
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
    assert not fast.glimpse_applies(q)
    wide = pointer_layout(2, 5, 2, 16)
    assert fast.glimpse_applies(wide) and not fast.glimpse_applies(wide.transpose(-1, -2).contiguous().transpose(-1, -2))
    k, v = pointer_layout(2, 4, 2, 12), pointer_layout(2, 4, 2, 12)
    mask = torch.zeros(2, 1, 5, 4)
    out, _ = fast.flash_forward(q, k, v, mask)  # aten's kernel, same values
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    with pytest.raises(RuntimeError, match="head width 8, 16, 32 or 64"):
        kernel.glimpse_forward(q, k, v, mask, 0.25)


def test_the_switch_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv(fast.GLIMPSE_SWITCH, "0")
    fast.glimpse_kernel.cache_clear()
    try:
        assert fast.glimpse_kernel() is None and not fast.glimpse_applies(pointer_layout(1, 3, 2, 16))
    finally:
        monkeypatch.undo()
        fast.glimpse_kernel.cache_clear()
