import itertools
import math
import os
import shutil

import pytest
import torch
from torch import nn
from torch.utils import cpp_extension

from ho_co.layers import HOLinear, chunk_sizes
from ho_co.layers import high_order
from ho_co.layers.high_order import high_order_eager


def kron_reference(layer: HOLinear, x: torch.Tensor) -> torch.Tensor:
    """The paper's definition, built literally: x^ = kron_i [x_i; 1], w^_m = kron_i [w_mi; 1]."""
    x_chunks = torch.tensor_split(x, layer.order, dim=-1)
    w_chunks = torch.tensor_split(layer.weight, layer.order, dim=-1)
    one = torch.ones(1, dtype=x.dtype)
    rows = []
    for row in x.reshape(-1, layer.in_features):
        x_hat = torch.ones(1, dtype=x.dtype)
        for chunk in torch.tensor_split(row, layer.order):
            x_hat = torch.kron(x_hat, torch.cat([chunk, one]))
        outputs = []
        for m in range(layer.out_features):
            w_hat = torch.ones(1, dtype=x.dtype)
            for w_chunk in w_chunks:
                w_hat = torch.kron(w_hat, torch.cat([w_chunk[m], one]))
            outputs.append(w_hat @ x_hat - 1)
        rows.append(torch.stack(outputs))
    y = torch.stack(rows).reshape(*x.shape[:-1], layer.out_features)
    assert len(x_chunks) == layer.order
    return y + layer.bias if layer.bias is not None else y


def subsets_reference(layer: HOLinear, x: torch.Tensor) -> torch.Tensor:
    """W x + b + sum over subsets |S| >= 2 of prod z_i: the expanded form of the same operator."""
    zs = [c @ w.T for c, w in zip(torch.tensor_split(x, layer.order, -1), torch.tensor_split(layer.weight, layer.order, -1))]
    y = x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)
    for size in range(2, layer.order + 1):
        for subset in itertools.combinations(zs, size):
            y = y + math.prod(subset)
    return y


@pytest.mark.parametrize("in_features,order", [(4, 2), (6, 3), (7, 3), (9, 4), (5, 5), (10, 4), (3, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_explicit_kron_construction(in_features, order, bias):
    torch.manual_seed(in_features * 10 + order)
    layer = HOLinear(in_features, 3, order=order, bias=bias).double()
    x = torch.randn(2, 3, in_features, dtype=torch.double)
    expected = kron_reference(layer, x)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer(x), subsets_reference(layer, x), rtol=1e-10, atol=1e-12)


def test_uneven_chunks_follow_tensor_split():
    assert chunk_sizes(10, 4) == [3, 3, 2, 2]
    assert chunk_sizes(8, 4) == [2, 2, 2, 2]
    assert chunk_sizes(7, 7) == [1] * 7
    assert [len(c) for c in torch.tensor_split(torch.arange(10), 4)] == chunk_sizes(10, 4)


def test_order_one_is_nn_linear_and_state_dict_loads():
    torch.manual_seed(0)
    linear = nn.Linear(12, 5)
    layer = HOLinear(12, 5, order=1)
    layer.load_state_dict(linear.state_dict())
    x = torch.randn(4, 12)
    torch.testing.assert_close(layer(x), linear(x))
    # Same names and shapes as nn.Linear at any order, so checkpoints load both ways.
    assert {k: v.shape for k, v in HOLinear(12, 5, order=3).state_dict().items()} == {
        k: v.shape for k, v in linear.state_dict().items()
    }


def test_from_linear_is_exact_at_init_and_trains_high_order_strength():
    torch.manual_seed(1)
    linear = nn.Linear(16, 8)
    layer = HOLinear.from_linear(linear, order=4)
    assert "ho_scale" in dict(layer.named_parameters())
    x = torch.randn(32, 16)
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-6, atol=1e-6)

    # The from-scratch layer with the same weights is the same operator at ho_scale = 1:
    # training only ho_scale towards its outputs must move ho_scale from 0 towards 1.
    target = HOLinear(16, 8, order=4)
    target.load_state_dict(linear.state_dict())
    y_target = target(x * 2).detach()
    optimizer = torch.optim.SGD([layer.ho_scale], lr=5.0)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = (layer(x * 2) - y_target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert layer.ho_scale.mean() > 0.1


def test_to_linear_is_the_first_order_part():
    torch.manual_seed(3)
    linear = nn.Linear(12, 5)
    layer = HOLinear.from_linear(linear, order=3)
    x = torch.randn(6, 12)
    back = layer.to_linear()
    assert type(back) is nn.Linear and back.bias is not None and back.weight.requires_grad
    torch.testing.assert_close(back(x), layer(x))  # ho_scale 0: the same function
    with torch.no_grad():
        layer.ho_scale.fill_(0.5)
    assert not torch.allclose(layer.to_linear()(x), layer(x))  # otherwise the orders >= 2 are dropped
    torch.testing.assert_close(layer.to_linear()(x), linear(x))
    frozen = HOLinear(12, 5, order=1, bias=False).requires_grad_(False)
    assert frozen.to_linear().bias is None and not frozen.to_linear().weight.requires_grad
    torch.testing.assert_close(frozen.to_linear()(x), frozen(x))  # order 1: linear too


def test_from_linear_rejects_non_linear():
    with pytest.raises(TypeError, match="nn.Linear"):
        HOLinear.from_linear(nn.Conv1d(3, 3, 1), order=2)


def test_gradcheck_float64():
    torch.manual_seed(2)
    layer = HOLinear(7, 3, order=3).double()
    x = torch.randn(4, 7, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,)),
                                    (x, layer.weight, layer.bias))
    converted = HOLinear.from_linear(nn.Linear(7, 3).double(), order=3)
    with torch.no_grad():
        converted.ho_scale.fill_(0.7)
    assert torch.autograd.gradcheck(converted, (x,))


def test_torch_func_grad_and_vmap():
    layer = HOLinear(6, 2, order=3).double()
    params = dict(layer.named_parameters())
    x = torch.randn(5, 6, dtype=torch.double)
    grads = torch.func.grad(lambda p: torch.func.functional_call(layer, p, (x,)).sum())(params)
    assert set(grads) == {"weight", "bias"} and all(torch.isfinite(g).all() for g in grads.values())
    per_row = torch.func.vmap(layer)(x)
    torch.testing.assert_close(per_row, layer(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_order_eight_is_finite_in_training(dtype):
    torch.manual_seed(3)
    layer = HOLinear(256, 64, order=8)
    x = torch.randn(512, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        y = layer(x)
        loss = y.float().pow(2).mean()
    loss.backward()
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(layer.bias.grad).all()
    assert layer.weight.grad.abs().sum() > 0


def test_bf16_keeps_small_first_order_terms():
    # prod(1+z)-1 formed naively in bf16 would round (1 + 1e-3) to 1 and lose W x entirely.
    torch.manual_seed(6)
    layer = HOLinear(8, 4, order=4, bias=False)
    x = torch.randn(16, 8) * 1e-3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        z = layer.chunk_products(x)  # the bf16 planes: their sum is the first order the layer can know
    torch.testing.assert_close(y.float(), z.float().sum(0), rtol=2e-2, atol=1e-6)
    torch.testing.assert_close(y.float(), x @ layer.weight.T, rtol=2e-2, atol=1e-5)
    # The eager path (torch.compile, other devices) rounds each step to bf16, so a little looser.
    torch.testing.assert_close(high_order_eager(z).float(), z.float().sum(0), rtol=2e-2, atol=1e-5)


def test_any_leading_shape_and_compile():
    torch.manual_seed(4)
    layer = HOLinear(10, 6, order=3)
    x = torch.randn(2, 3, 4, 10)
    y = layer(x)
    assert y.shape == (2, 3, 4, 6)
    torch.testing.assert_close(layer(x.reshape(-1, 10)).reshape(2, 3, 4, 6), y)
    assert layer(torch.randn(10)).shape == (6,)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), y)


@pytest.mark.parametrize("order", [0, -1, 11, 2.0, True])
def test_bad_order_raises(order):
    with pytest.raises(ValueError, match="order"):
        HOLinear(10, 4, order=order)


def test_wrong_input_width_raises():
    with pytest.raises(ValueError, match="last dim 10"):
        HOLinear(10, 4, order=2)(torch.randn(3, 9))


needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None, reason="the fused CPU kernel needs a C++ compiler"
)


@needs_compiler
def test_the_fused_kernel_builds_and_is_used():
    assert high_order.fused_kernel() is not None
    layer = HOLinear(8, 4, order=2)
    y = layer(torch.randn(3, 8, requires_grad=True))
    assert type(y.grad_fn).__name__ == "_FusedBackward"


@needs_compiler
@pytest.mark.parametrize("order", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("convert", [False, True])
def test_fused_and_eager_paths_agree(order, dtype, convert):
    """Same outputs and gradients (weight, bias, ho_scale, input) from the fused kernel and torch ops."""
    torch.manual_seed(order)
    linear = nn.Linear(3 * order + 1, 5).to(dtype)
    if convert:
        layer = HOLinear.from_linear(linear, order)
        with torch.no_grad():
            layer.ho_scale.uniform_(-1, 1)
    else:
        layer = HOLinear(3 * order + 1, 5, order=order).to(dtype)
        layer.load_state_dict(linear.state_dict())
    x = torch.randn(2, 7, 3 * order + 1, dtype=dtype, requires_grad=True)
    g = torch.randn(2, 7, 5, dtype=dtype)

    def run(product):
        z = layer.chunk_products(x)
        y = product(z, layer.ho_scale, layer.bias)
        grads = torch.autograd.grad(y, [x, *layer.parameters()], g)
        return y, grads

    fused_y, fused_grads = run(lambda *a: high_order.high_order(*a, private_z=True))
    assert type(fused_y.grad_fn).__name__ == "_FusedBackward"
    eager_y, eager_grads = run(high_order.high_order_eager)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(fused_y, eager_y, rtol=tol, atol=tol)
    for fused, eager in zip(fused_grads, eager_grads):
        assert fused.dtype == eager.dtype
        torch.testing.assert_close(fused, eager, rtol=tol, atol=tol * 10)


@needs_compiler
def test_fused_backward_twice_with_retained_graph():
    """The planes' memory is reused for their gradient only when the graph is freed."""
    torch.manual_seed(7)
    layer = HOLinear(12, 6, order=3)
    x = torch.randn(5, 12)
    y = layer(x)
    (first,) = torch.autograd.grad(y.sum(), layer.weight, retain_graph=True)
    (second,) = torch.autograd.grad(y.sum(), layer.weight)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()


def test_without_a_compiler_the_layer_falls_back_to_torch_ops(monkeypatch):
    torch.manual_seed(8)
    layer = HOLinear.from_linear(nn.Linear(9, 4), order=3)
    with torch.no_grad():
        layer.ho_scale.fill_(0.5)
    x = torch.randn(6, 9)
    expected = high_order.high_order_eager(layer.chunk_products(x), layer.ho_scale, layer.bias)

    def no_compiler(*args, **kwargs):
        raise RuntimeError("c++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    high_order.fused_kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="fused CPU kernel is unavailable.*command not found"):
            assert high_order.fused_kernel() is None
        y = layer(x)
        assert type(y.grad_fn).__name__ != "_FusedBackward"
        torch.testing.assert_close(y, expected)
        y.sum().backward()
        assert torch.isfinite(layer.ho_scale.grad).all()
    finally:
        high_order.fused_kernel.cache_clear()


@needs_compiler
def test_fused_inference_matches_training_forward():
    torch.manual_seed(9)
    layer = HOLinear.from_linear(nn.Linear(10, 6), order=3)
    with torch.no_grad():
        layer.ho_scale.uniform_()
    x = torch.randn(4, 10)
    with torch.no_grad():
        y = layer(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, layer(x).detach(), rtol=0, atol=0)
    torch.testing.assert_close(y, high_order.high_order_eager(layer.chunk_products(x), layer.ho_scale, layer.bias))
