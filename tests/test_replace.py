import re

import pytest
import torch
from torch import nn

from ho_co import HOLinear, replace_linear
from ho_co.replace import as_conv1d, as_linear, linear_features, name_matches


class Conv1D(nn.Module):
    """Same layout as transformers.pytorch_utils.Conv1D (GPT-2): weight [in, out], y = x W + b."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).reshape(*x.shape[:-1], self.nf)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.k_proj = nn.Linear(8, 8, bias=False)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.c_proj = Conv1D(8, 8)

    def forward(self, x):
        return self.c_proj(self.mlp(self.q_proj(x) + self.k_proj(x)))


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for block in self.encoder:
            x = block(x)
        return self.head(x)


def to_ho(order=2):
    return lambda lin: HOLinear.from_linear(lin, order=order)


def replaced_names(report):
    return [e.name for e in report.replaced]


@pytest.mark.parametrize(
    "name,pattern,expected",
    [
        ("encoder.0.q_proj", "q_proj", True),  # PEFT-style dotted suffix
        ("encoder.0.xq_proj", "q_proj", False),
        ("encoder.0.q_proj", "encoder.*", True),  # glob on the full name
        ("head", "encoder.*", False),
        ("encoder.0.mlp.0", "*.mlp.*", True),
        ("encoder.0.q_proj", re.compile(r"encoder\.\d\.q_proj"), True),  # regex, full match
        ("encoder.0.q_proj", re.compile(r"q_proj"), False),
    ],
)
def test_pattern_semantics(name, pattern, expected):
    assert name_matches(name, pattern) is expected


def test_replaces_chosen_layers_and_keeps_function():
    torch.manual_seed(0)
    model = Model()
    x = torch.randn(3, 8)
    before = model(x)
    report = replace_linear(model, to_ho(), targets=["q_proj", "*.mlp.*"], exclude=[re.compile(r"encoder\.1\..*")])
    assert replaced_names(report) == ["encoder.0.q_proj", "encoder.0.mlp.0", "encoder.0.mlp.2"]
    assert isinstance(model.encoder[0].q_proj, HOLinear)
    assert isinstance(model.encoder[1].q_proj, nn.Linear)
    assert all(e.old_type == "Linear" and e.new_type == "HOLinear" for e in report.replaced)
    torch.testing.assert_close(model(x), before)


def test_all_layers_by_default_and_type_and_predicate_filters():
    model = Model()
    report = replace_linear(model, to_ho(), types=(nn.Linear,), predicate=lambda name, m: m.out_features == 8)
    assert replaced_names(report) == [f"encoder.{i}.{n}" for i in range(2) for n in ("q_proj", "k_proj", "mlp.2")]
    assert isinstance(model.encoder[0].c_proj, Conv1D)  # Conv1D left out by `types`
    assert isinstance(model.head, nn.Linear)


def test_conv1d_becomes_equivalent_linear_for_the_factory():
    torch.manual_seed(1)
    conv = Conv1D(6, 4)
    x = torch.randn(5, 4)
    linear = as_linear(conv)
    assert isinstance(linear, nn.Linear) and linear.weight.shape == (6, 4)
    torch.testing.assert_close(linear(x), conv(x))

    model = Model()
    seen = []
    report = replace_linear(model, lambda lin: seen.append(type(lin)) or HOLinear.from_linear(lin, 2), targets="c_proj")
    assert seen == [nn.Linear, nn.Linear]
    assert [e.old_type for e in report.replaced] == ["Conv1D", "Conv1D"]
    assert isinstance(model.encoder[0].c_proj, HOLinear)


def test_conv1d_and_back_is_the_same_function():
    pytest.importorskip("transformers")
    torch.manual_seed(2)
    conv = Conv1D(6, 4)
    x = torch.randn(5, 4)
    assert linear_features(conv) == linear_features(as_linear(conv)) == (4, 6)
    back = as_conv1d(as_linear(conv))
    assert type(back).__name__ == "Conv1D" and back.weight.shape == conv.weight.shape
    torch.testing.assert_close(back(x), conv(x))
    no_bias = nn.Linear(4, 6, bias=False)
    torch.testing.assert_close(as_conv1d(no_bias)(x), no_bias(x))
    with pytest.raises(TypeError, match="neither nn.Linear nor a GPT-2 Conv1D"):
        linear_features(nn.LayerNorm(4))


def test_exact_names_select_only_those_modules():
    model = Model()
    report = replace_linear(model, to_ho(), targets="k_proj", names=["encoder.0.q_proj", "encoder.1.c_proj"])
    assert replaced_names(report) == ["encoder.0.q_proj", "encoder.0.k_proj", "encoder.1.k_proj", "encoder.1.c_proj"]
    assert isinstance(model.encoder[1].q_proj, nn.Linear)  # a name is no suffix pattern
    assert replace_linear(Model(), to_ho(), names=[]).entries == []  # no names: nothing, not everything
    with pytest.raises(ValueError, match=r"module 'q_proj' is no linear layer of Model; linear layers: encoder\.0"):
        replace_linear(Model(), to_ho(), names=["q_proj"])


def test_check_runs_on_every_chosen_layer_before_any_change():
    model = Model()
    seen = []

    def check(n_in, n_out):
        seen.append((n_in, n_out))
        if n_in == 16:
            raise ValueError("too wide")

    with pytest.raises(ValueError, match=r"module 'encoder\.0\.mlp\.2' \(16->8\): too wide"):
        replace_linear(model, to_ho(), targets="encoder.*", check=check)
    assert seen[:3] == [(8, 8), (8, 8), (8, 16)]
    assert not any(isinstance(m, HOLinear) for m in model.modules())


def test_dry_run_changes_nothing():
    model = Model()
    calls = []
    report = replace_linear(model, lambda lin: calls.append(lin), targets="encoder.*", dry_run=True)
    assert calls == []
    assert len(report.entries) == 10
    assert all(isinstance(m, (nn.Linear, Conv1D)) for n, m in model.named_modules() if n.endswith(("proj", "head")))
    assert "would replace 10" in str(report)


def test_pattern_matching_nothing_lists_names():
    with pytest.raises(ValueError, match=r"'v_proj' matches no linear layer.*encoder\.0\.q_proj"):
        replace_linear(Model(), to_ho(), targets=["q_proj", "v_proj"])


def test_unconvertible_module_is_skipped_with_reason():
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 4))
    report = replace_linear(model, to_ho(order=3))
    assert [e.name for e in report.skipped] == ["0"]
    assert "exceeds in_features 2" in report.skipped[0].skipped
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], HOLinear)
    assert "skipped: HOLinear order 3 exceeds" in str(report)


def test_rl4co_matnet_policy_runs_after_replacement():
    from rl4co.envs import ATSPEnv
    from rl4co.models.zoo.matnet import MatNetPolicy

    torch.manual_seed(0)
    env = ATSPEnv(generator_params={"num_loc": 6})
    policy = MatNetPolicy()
    report = replace_linear(policy, lambda lin: HOLinear(lin.in_features, lin.out_features, order=4, bias=lin.bias is not None),
                            targets=["encoder.*"])
    assert len(report) > 0 and not report.skipped
    td = env.reset(batch_size=[3])
    out = policy(td, env, phase="test", decode_type="greedy")
    assert out["reward"].shape == (3,)
    assert torch.isfinite(out["reward"]).all()
    actions = out["actions"]
    assert all(sorted(row.tolist()) == list(range(6)) for row in actions)
