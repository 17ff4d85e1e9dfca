import itertools
import math

import pytest
import torch
from torch import nn

from ho_co.layers import QuanTALinear
from ho_co.layers.quanta import factorize, gate_pairs, gate_shapes, official_dims, quanta_dims
from ho_co.layers.quanta_circuit import plan_circuit, run_circuit

F64 = torch.float64


def gate_matrix(gate: torch.Tensor, m: int, n: int, before: list[int], after: list[int]) -> torch.Tensor:
    """The full matrix of one two-axis gate, entry by entry: identity on every other axis."""
    rows = list(itertools.product(*[range(d) for d in after]))
    cols = list(itertools.product(*[range(d) for d in before]))
    full = torch.zeros(len(rows), len(cols), dtype=gate.dtype)
    for r, out_index in enumerate(rows):
        for c, in_index in enumerate(cols):
            if all(out_index[k] == in_index[k] for k in range(len(before)) if k not in (m, n)):
                full[r, c] = gate[out_index[m], out_index[n], in_index[m], in_index[n]]
    return full


def circuit_matrix(gates, dims, out_dims, pairs=None) -> torch.Tensor:
    """prod of the gates' full matrices, first gate rightmost: the explicit d_out x d_in operator
    (gates in the official order unless `pairs` names the axes of each)."""
    current = list(dims)
    full = torch.eye(math.prod(dims), dtype=gates[0].dtype)
    for gate, (m, n) in zip(gates, pairs or gate_pairs(len(dims))):
        after = current.copy()
        after[m], after[n] = out_dims[m], out_dims[n]
        full = gate_matrix(gate, m, n, current, after) @ full
        current = after
    return full


def assert_same_function(got, expected, inputs, grad) -> None:
    """Same values, and the same gradients into every one of `inputs` for the output gradient `grad`."""
    torch.testing.assert_close(got, expected)
    expected_grads = torch.autograd.grad(expected, inputs, grad, retain_graph=True)
    for a, b in zip(torch.autograd.grad(got, inputs, grad), expected_grads):
        torch.testing.assert_close(a, b)


def randomize(layer: QuanTALinear, scale: float = 1.0) -> None:
    """Move T away from S, as training would."""
    with torch.no_grad():
        for t in layer.quanta_T:
            t.add_(scale * torch.randn_like(t))


SHAPES = [
    ((3, 4), (3, 4)),  # N=2 square
    ((3, 4), (5, 2)),  # N=2 non-square
    ((2, 3, 2), (2, 3, 2)),  # N=3 square
    ((2, 3, 2), (3, 1, 4)),  # N=3 non-square
    ((2, 2, 3, 2), (2, 2, 3, 2)),  # N=4 square
    ((2, 2, 2, 2), (3, 2, 1, 2)),  # N=4 non-square
]


@pytest.mark.parametrize("dims,out_dims", SHAPES)
def test_forward_equals_explicit_operator(dims, out_dims):
    torch.manual_seed(0)
    base = nn.Linear(math.prod(dims), math.prod(out_dims), dtype=F64)
    layer = QuanTALinear(base, dims=dims, out_dims=out_dims)
    randomize(layer)
    t_full = circuit_matrix(list(layer.quanta_T), dims, out_dims)
    s_full = circuit_matrix(layer.frozen_gates(), dims, out_dims)
    x = torch.randn(2, 3, math.prod(dims), dtype=F64)
    expected = x @ (base.weight + t_full - s_full).T + base.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight(), t_full - s_full)


@pytest.mark.parametrize("limit", [1, 8, 12, 10**6])  # every gate alone ... the whole circuit as one block
@pytest.mark.parametrize("dims,out_dims", SHAPES)
def test_blocked_circuit_is_the_gate_by_gate_operator(dims, out_dims, limit):
    torch.manual_seed(2)
    gates = [torch.randn(s, dtype=F64, requires_grad=True) for s in gate_shapes(dims, out_dims)]
    circuit = plan_circuit(gate_pairs(len(dims)), dims, out_dims, limit)
    assert sorted(g for block in circuit.blocks for g in block.gates) == list(range(len(gates)))
    x = torch.randn(5, math.prod(dims), dtype=F64, requires_grad=True)
    g = torch.randn(5, math.prod(out_dims), dtype=F64)
    assert_same_function(run_circuit(x, gates, circuit), x @ circuit_matrix(gates, dims, out_dims).T, [x, *gates], g)


@pytest.mark.parametrize("limit", [1, 12, 10**6])
@pytest.mark.parametrize("dims,out_dims", SHAPES)
def test_circuit_beside_a_linear_layer_is_their_sum(dims, out_dims, limit):
    """With weight and bias, one pass gives rows @ W.T + b + circuit(rows) and all their gradients."""
    torch.manual_seed(3)
    gates = [torch.randn(s, dtype=F64, requires_grad=True) for s in gate_shapes(dims, out_dims)]
    circuit = plan_circuit(gate_pairs(len(dims)), dims, out_dims, limit)
    x = torch.randn(7, math.prod(dims), dtype=F64, requires_grad=True)
    weight = torch.randn(math.prod(out_dims), math.prod(dims), dtype=F64, requires_grad=True)
    bias = torch.randn(math.prod(out_dims), dtype=F64, requires_grad=True)
    g = torch.randn(7, math.prod(out_dims), dtype=F64)
    got = run_circuit(x, gates, circuit, weight, bias)
    expected = x @ (weight + circuit_matrix(gates, dims, out_dims)).T + bias
    assert_same_function(got, expected, [x, weight, bias, *gates], g)
    # Only what needs a gradient gets one; an expanded gradient (from .sum()) reads the same.
    frozen = run_circuit(x.detach(), gates, circuit, weight.detach())
    expected = x.detach() @ (weight.detach() + circuit_matrix(gates, dims, out_dims)).T
    for a, b in zip(torch.autograd.grad(frozen.sum(), gates), torch.autograd.grad(expected.sum(), gates)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("pairs", [[(0, 1), (1, 2), (0, 2)], [(0, 1), (0, 1), (1, 2)]])
@pytest.mark.parametrize("limit", [1, 6])
def test_circuit_whose_first_block_needs_a_permute(pairs, limit):
    """Any gate order runs: here the first gate acts on the leading axes, so the first block
    permutes (and in the second order, the second gate finds its axes already trailing)."""
    torch.manual_seed(4)
    dims, out_dims = (2, 3, 2), (3, 2, 2)
    sizes, gates = list(dims), []
    for m, n in pairs:
        gates.append(torch.randn(out_dims[m], out_dims[n], sizes[m], sizes[n], dtype=F64, requires_grad=True))
        sizes[m], sizes[n] = out_dims[m], out_dims[n]
    full = circuit_matrix(gates, dims, out_dims, pairs)
    circuit = plan_circuit(pairs, dims, out_dims, limit)
    assert circuit.blocks[0].permute is not None
    x = torch.randn(4, 12, dtype=F64, requires_grad=True)
    weight = torch.randn(12, 12, dtype=F64)
    g = torch.randn(4, 12, dtype=F64)
    for w in (None, weight):
        expected = x @ (full if w is None else full + w).T
        assert_same_function(run_circuit(x, gates, circuit, w), expected, [x, *gates], g)


def test_official_split_runs_as_four_blocks():
    """(16, 8, 8, 4): gates (2,3), (1,3), (1,2) on axes 1-3; then (0,3), (0,2), (0,1) one by one."""
    circuit = plan_circuit(gate_pairs(4), (16, 8, 8, 4), (16, 8, 8, 4))
    assert [(b.gates, b.axes) for b in circuit.blocks] == [((0, 1, 3), (1, 2, 3)), ((2,), (0, 3)), ((4,), (0, 2)),
                                                          ((5,), (0, 1))]
    # Each block reads its axes in the order the activation holds them and writes them ascending:
    # [a0 a1 a2 a3] -> [a1 a2 | a0 a3] -> [a1 a3 | a2 a0] -> [a3 a2 | a1 a0], written [a3 a2 a0 a1].
    assert [b.in_axes for b in circuit.blocks] == [(1, 2, 3), (0, 3), (2, 0), (1, 0)]
    assert [b.permute for b in circuit.blocks] == [None, (0, 2, 3, 1, 4), (0, 1, 4, 2, 3), (0, 2, 4, 1, 3)]
    assert circuit.final == (0, 3, 4, 2, 1)
    # A limit of 512 would merge (0,3) and (0,2): fewer blocks, more flops.
    assert len(plan_circuit(gate_pairs(4), (16, 8, 8, 4), (16, 8, 8, 4), limit=512).blocks) == 3


def test_seed_example_n3_formula():
    """(T x)_{i1 i2 i3} = sum T1_{i1,i2;k1,k2} T2_{k1,i3;j1,k3} T3_{k2,k3;j2,j3} x_{j1,j2,j3}."""
    torch.manual_seed(1)
    dims = (2, 3, 4)
    layer = QuanTALinear(nn.Linear(24, 24, bias=False, dtype=F64), dims=dims)
    randomize(layer)
    with torch.no_grad():
        for s in layer.frozen_gates():
            s.zero_()  # leaves base(x) + T(x)
    t3, t2, t1 = layer.quanta_T  # applied first to last
    x = torch.randn(5, *dims, dtype=F64)
    tx = torch.einsum("abcd,cefg,dghi,zfhi->zabe", t1, t2, t3, x)
    expected = x.reshape(5, 24) @ layer.base_layer.weight.T + tx.reshape(5, 24)
    torch.testing.assert_close(layer(x.reshape(5, 24)), expected)


@pytest.mark.parametrize("dims,out_dims", SHAPES)
def test_zero_delta_at_init(dims, out_dims):
    torch.manual_seed(2)
    base = nn.Linear(math.prod(dims), math.prod(out_dims))
    layer = QuanTALinear(base, dims=dims, out_dims=out_dims)
    x = torch.randn(4, 7, base.in_features)
    torch.testing.assert_close(layer(x), base(x), rtol=0, atol=1e-6)
    assert layer.delta_weight().abs().max() <= 1e-6
    # T itself is not zero: the gates start well conditioned, only T - S is zero.
    assert all(t.abs().max() > 0 for t in layer.quanta_T)


def test_zero_delta_at_init_bfloat16():
    torch.manual_seed(3)
    base = nn.Linear(64, 64, dtype=torch.bfloat16)
    layer = QuanTALinear(base, dims=(4, 4, 4))
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert all(t.dtype == torch.float32 for t in layer.quanta_T)  # master gates stay float32
    torch.testing.assert_close(y, base(x), rtol=0, atol=1e-2)


@pytest.mark.parametrize("dims,out_dims", [((4, 4, 4), (4, 4, 4)), ((4, 2, 4), (2, 3, 4))])
def test_merge_unmerge_round_trip(dims, out_dims):
    torch.manual_seed(4)
    base = nn.Linear(math.prod(dims), math.prod(out_dims))
    w0 = base.weight.detach().clone()
    layer = QuanTALinear(base, dims=dims, out_dims=out_dims)
    randomize(layer, 0.3)
    x = torch.randn(6, base.in_features)
    unmerged = layer(x)
    delta = layer.delta_weight().detach()
    merged = layer.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight, w0 + delta)
    torch.testing.assert_close(merged(x), unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)  # wrapper, merged
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dims,out_dims", [((4, 4, 4), (4, 4, 4)), ((2, 2, 2, 2, 2, 2), (2, 2, 2, 2, 2, 2)), ((4, 4, 4), (6, 4, 2))]
)
def test_delta_rank_beats_equal_parameter_lora(dims, out_dims):
    torch.manual_seed(5)
    d_in, d_out = math.prod(dims), math.prod(out_dims)
    layer = QuanTALinear(nn.Linear(d_in, d_out, dtype=F64), dims=dims, out_dims=out_dims)
    randomize(layer)
    n_params = sum(t.numel() for t in layer.quanta_T)
    lora_rank = n_params // (d_in + d_out)  # LoRA B @ A with the same number of parameters
    rank = torch.linalg.matrix_rank(layer.delta_weight().detach()).item()
    assert rank > lora_rank
    assert rank == min(d_in, d_out)


def test_only_T_trains():
    torch.manual_seed(6)
    base = nn.Linear(24, 24)
    layer = QuanTALinear(base, dims=(2, 3, 4))
    trainable = [name for name, p in layer.named_parameters() if p.requires_grad]
    assert trainable == ["quanta_T.0", "quanta_T.1", "quanta_T.2"]
    assert {name for name, _ in layer.named_buffers()} == {"quanta_S.0", "quanta_S.1", "quanta_S.2"}
    frozen_before = {k: v.clone() for k, v in layer.state_dict().items() if not k.startswith("quanta_T")}
    layer(torch.randn(5, 24)).pow(2).sum().backward()
    assert base.weight.grad is None and base.bias.grad is None
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in layer.quanta_T)
    optimizer = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    optimizer.step()
    for key, value in layer.state_dict().items():
        if key in frozen_before:
            assert torch.equal(value, frozen_before[key]), key
    assert layer.delta_weight().abs().max() > 0  # T moved, S did not


def test_state_dict_round_trip_into_fresh_layer():
    torch.manual_seed(7)
    base = nn.Linear(24, 12)
    layer = QuanTALinear(base, dims=(2, 3, 4))
    randomize(layer)
    fresh = QuanTALinear(nn.Linear(24, 12), dims=(2, 3, 4))
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(3, 24)
    torch.testing.assert_close(fresh(x), layer(x))


def test_factorize():
    assert factorize(4096, 3) == (16, 16, 16)
    assert factorize(4096, 4) == (8, 8, 8, 8)
    assert factorize(11008, 3) == (43, 16, 16)
    assert factorize(13, 3) == (13, 1, 1)
    for n in [1, 6, 24, 30, 768, 1000, 3072]:
        for k in [2, 3, 4]:
            assert math.prod(factorize(n, k)) == n and len(factorize(n, k)) == k


def test_automatic_dims():
    layer = QuanTALinear(nn.Linear(64, 24), n_axes=3)
    assert layer.dims == (4, 4, 4) and layer.out_dims == (4, 3, 2)
    # Default: the official runs' 4 axes.
    assert quanta_dims(4096, 4096) == ((16, 8, 8, 4), (16, 8, 8, 4))
    assert quanta_dims(4096, 11008) == ((16, 8, 8, 4), (43, 8, 8, 4))
    assert QuanTALinear(nn.Linear(64, 24)).dims == (4, 4, 2, 2)
    assert official_dims(768) == (12, 4, 4, 4) and official_dims(13) == (13, 1, 1, 1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dims": (4, 4, 2)}, r"\(4, 4, 2\) multiply to 32, but the layer has 64 input"),
        ({"dims": (8, 8), "out_dims": (4, 4)}, r"\(4, 4\) multiply to 16, but the layer has 48 output"),
        ({"dims": (8, 0, 8)}, r"integer >= 1, got 0"),
        ({"dims": (-8, -8)}, r"integer >= 1, got -8"),
        ({"dims": (64,)}, r"at least 2 axes"),
        ({"dims": (8, 8), "out_dims": (4, 4, 3)}, r"same number of axes"),
    ],
)
def test_bad_dims_raise_with_numbers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuanTALinear(nn.Linear(64, 48), **kwargs)


def test_dims_costlier_than_a_dense_update_raise():
    # 13 is prime: (13, 1, 1) would make two 13 x 13 gates, more than the 13 x 13 matrix itself
    message = r"\(13, 1, 1\) -> \(13, 1, 1\) need 339 gate parameters, more than a dense 13x13 update \(169\)"
    with pytest.raises(ValueError, match=message):
        QuanTALinear(nn.Linear(13, 13), n_axes=3)
    with pytest.raises(ValueError, match=r"\(13, 1, 1, 1\) -> \(13, 1, 1, 1\) need 510 gate parameters"):
        QuanTALinear(nn.Linear(13, 13))  # the default 4 axes: three 13 x 13 gates
    assert QuanTALinear(nn.Linear(13, 13), dims=(13, 1)).dims == (13, 1)  # one full gate: allowed


def test_bad_base_and_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        QuanTALinear(nn.Conv1d(4, 4, 1))
    layer = QuanTALinear(nn.Linear(16, 16), dims=(4, 4))
    with pytest.raises(ValueError, match="last dim 16"):
        layer(torch.randn(2, 15))


def unfolded(layer: QuanTALinear, x: torch.Tensor) -> torch.Tensor:
    """base(x) + T(x) - S(x), each circuit run on its own: the definition, without the fold."""
    rows = x.reshape(-1, layer.in_features)
    delta = layer._circuit(rows, layer.quanta_T) - layer._circuit(rows, layer.frozen_gates())
    return layer.base_layer(x) + delta.reshape(*x.shape[:-1], -1).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_untrained_adapter_is_the_base_layer_bit_for_bit(dtype):
    torch.manual_seed(8)
    base = nn.Linear(64, 32, dtype=dtype)
    layer = QuanTALinear(base, dims=(4, 4, 4), out_dims=(4, 4, 2))
    x = torch.randn(8, 64, dtype=dtype, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, base(x), rtol=0, atol=0)
    # T still gets T(x)'s gradient, and x only the base's (T - S = 0).
    g = torch.randn_like(y)
    y.backward(g)
    x_grad = x.grad.clone()
    x.grad = None
    base(x).backward(g)
    torch.testing.assert_close(x_grad, x.grad, rtol=0, atol=0)
    rows = x.detach()
    expected = torch.autograd.grad(layer._circuit(rows, layer.quanta_T), list(layer.quanta_T), g.reshape(8, 32))
    for t, e in zip(layer.quanta_T, expected):
        torch.testing.assert_close(t.grad, e.to(t.grad.dtype))


def test_trained_adapter_runs_T_on_the_folded_base_weight():
    torch.manual_seed(9)
    base = nn.Linear(24, 12, dtype=F64)
    w0 = base.weight.detach().clone()
    layer = QuanTALinear(base, dims=(2, 3, 4), out_dims=(2, 3, 2))
    randomize(layer)
    x = torch.randn(5, 24, dtype=F64, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, unfolded(layer, x), rtol=1e-12, atol=1e-12)
    s_full = circuit_matrix(layer.frozen_gates(), layer.dims, layer.out_dims)
    torch.testing.assert_close(layer.folded_weight(), w0 - s_full)
    assert torch.equal(base.weight, w0)  # the fold is a separate tensor: W0 keeps its bits
    (grad,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad(unfolded(layer, x).sum(), x)
    torch.testing.assert_close(grad, expected)
    # Built once, rebuilt only when S (or W0) changes.
    assert layer.folded_weight() is layer.folded_weight()
    fresh = QuanTALinear(nn.Linear(24, 12, dtype=F64), dims=(2, 3, 4), out_dims=(2, 3, 2))
    fresh(x)
    fresh.base_layer.load_state_dict(base.state_dict())
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh(x), y, rtol=1e-12, atol=1e-12)


def test_fold_in_bfloat16_rounds_once_and_keeps_the_base():
    torch.manual_seed(10)
    base = nn.Linear(64, 64, dtype=torch.bfloat16)
    w0 = base.weight.detach().clone()
    layer = QuanTALinear(base, dims=(4, 4, 4))
    with torch.no_grad():
        layer.quanta_T[0].mul_(1.0)  # T written in place (as by an optimizer) but still equal to S
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    y = layer(x)
    s_full = circuit_matrix([s.double() for s in layer.frozen_gates()], (4, 4, 4), (4, 4, 4))
    exact = (w0.double() - s_full).to(torch.bfloat16)  # W0 - S rounded once
    assert torch.equal(layer.folded_weight(), exact)
    assert torch.equal(base.weight, w0)
    torch.testing.assert_close(y, base(x), rtol=0, atol=2e-2)  # T - S = 0 up to bf16 rounding


def test_trained_adapter_under_bfloat16_autocast():
    """The one-pass path runs in autocast's dtype, as F.linear and the circuit would on their own."""
    torch.manual_seed(13)
    layer = QuanTALinear(nn.Linear(64, 32), dims=(4, 4, 4), out_dims=(4, 4, 2))
    randomize(layer, 0.1)
    x = torch.randn(6, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        expected = unfolded(layer, x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected.float(), rtol=2e-2, atol=5e-2)
    (grad,) = torch.autograd.grad(y.float().sum(), x)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
    assert layer.quanta_T[0].grad is None  # nothing accumulated by autograd.grad


def test_dropout_keeps_S_beside_T_while_training():
    torch.manual_seed(11)
    layer = QuanTALinear(nn.Linear(24, 24), dims=(2, 3, 4), dropout=0.5)
    randomize(layer)
    x = torch.randn(6, 24)
    torch.manual_seed(0)
    y = layer(x)
    torch.manual_seed(0)
    dropped = layer.dropout(x)
    rows = dropped.reshape(-1, 24)
    expected = layer.base_layer(x) + layer._circuit(rows, layer.quanta_T) - layer._circuit(rows, layer.frozen_gates())
    torch.testing.assert_close(y, expected)
    layer.eval()  # no dropout: the folded path, same function as the definition
    torch.testing.assert_close(layer(x), unfolded(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw_fused"])
def test_first_step_leaves_the_initial_state_with_any_optimizer(optimizer):
    """A fused AdamW moves T without bumping its version counter: the gradient marks the change."""
    torch.manual_seed(12)
    layer = QuanTALinear(nn.Linear(24, 24), dims=(2, 3, 4))
    params = list(layer.quanta_T)
    opt = torch.optim.SGD(params, lr=0.1) if optimizer == "sgd" else torch.optim.AdamW(params, lr=0.1, fused=True)
    x = torch.randn(5, 24)
    before = layer(x)
    torch.testing.assert_close(before, layer.base_layer(x), rtol=0, atol=0)
    before.pow(2).sum().backward()
    opt.step()
    after = layer(x)
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, unfolded(layer, x), rtol=1e-5, atol=1e-5)
