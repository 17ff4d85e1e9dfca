import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ho_co.adapters import (
    ADAPTERS,
    HOLinearConfig,
    QuanTAConfig,
    adapter_state_dict,
    apply_adapter,
    apply_holinear,
    apply_quanta,
    load_adapter,
    merge_and_unload,
    print_trainable_parameters,
    save_adapter,
    trainable_parameters,
)
from ho_co.layers import HOLinear, QuanTALinear


class Block(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        h = self.norm(x + self.q_proj(x) * torch.sigmoid(self.v_proj(x)))
        return h + self.down(torch.relu(self.up(h)))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def randomize(model: nn.Module) -> None:
    """Stand in for training: move every trainable tensor."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))


X = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0))


def test_apply_quanta_keeps_output_and_trains_only_gates(capsys):
    model = tiny()
    before = model(X)
    report = apply_quanta(model, ["q_proj", "v_proj"], dims=(4, 4))
    assert [e.name for e in report.replaced] == [
        "layers.0.q_proj", "layers.0.v_proj", "layers.1.q_proj", "layers.1.v_proj",
    ]
    assert isinstance(model.layers[1].v_proj, QuanTALinear)
    torch.testing.assert_close(model(X), before, rtol=0, atol=1e-6)

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(re.fullmatch(r"layers\.\d\.[qv]_proj\.quanta_T\.0", n) for n in trainable)
    n_gates = 4 * 16 * 16  # 4 layers, dims (4, 4): one 16 x 16 gate each
    total = sum(p.numel() for p in tiny().parameters())
    assert trainable_parameters(model) == (n_gates, total + n_gates)
    print_trainable_parameters(model)
    line = capsys.readouterr().out.strip()
    percent = 100 * n_gates / (total + n_gates)
    assert line == f"trainable params: {n_gates:,d} || all params: {total + n_gates:,d} || trainable%: {percent:.4f}"


def test_apply_quanta_automatic_dims_and_non_square():
    model = tiny()
    apply_quanta(model, "layers.*", exclude_modules="v_proj", n_axes=2)
    up = model.layers[0].up
    assert (up.dims, up.out_dims) == ((4, 4), (8, 4))
    assert not isinstance(model.layers[0].v_proj, QuanTALinear)
    assert isinstance(model.layers[0].down, QuanTALinear)


def test_a_training_step_moves_only_the_gates():
    model = tiny()
    apply_quanta(model, ["up", "down"], n_axes=2)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "quanta_T" not in k}
    gates = {k: v.clone() for k, v in model.state_dict().items() if "quanta_T" in k}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(X).pow(2).mean().backward()
    optimizer.step()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())
    assert all(not torch.equal(state[k], v) for k, v in gates.items())


def test_bad_dims_name_the_module_and_change_nothing():
    model = tiny()
    with pytest.raises(ValueError, match=r"layers\.0\.up.*\(4, 4\) multiply to 16, but the layer has 32 output"):
        apply_quanta(model, ["q_proj", "up"], dims=(4, 4), out_dims=(4, 4))
    assert not any(isinstance(m, QuanTALinear) for m in model.modules())
    with pytest.raises(TypeError, match="unknown options.*rank"):
        apply_quanta(model, "q_proj", rank=4)


def test_adapting_twice_is_refused_clearly():
    model = tiny()
    apply_quanta(model, "*proj", dims=(4, 4))
    with pytest.raises(ValueError, match="already adapted"):
        apply_quanta(model, "*proj*", dims=(4, 4))


def test_apply_holinear_train_modes():
    model = tiny()
    before = model(X)
    apply_holinear(model, ["up", "down"], order=2, train="high_order")
    assert isinstance(model.layers[0].up, HOLinear)
    torch.testing.assert_close(model(X), before, rtol=0, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"layers.{i}.{m}.ho_scale" for i in (0, 1) for m in ("up", "down")}

    model = tiny()
    apply_holinear(model, "layers.0.up", order=3, train="all")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layers.0.up.weight", "layers.0.up.bias", "layers.0.up.ho_scale"}


def test_apply_holinear_bad_input():
    with pytest.raises(ValueError, match="train must be one of"):
        apply_holinear(tiny(), "up", order=2, train="some")
    with pytest.raises(ValueError, match=r"layers\.0\.q_proj.*order 17 exceeds in_features 16"):
        apply_holinear(tiny(), "q_proj", order=17)
    with pytest.raises(ValueError, match=r"order must be an integer >= 1, got 0"):
        apply_holinear(tiny(), "q_proj", order=0)
    model = tiny()
    with pytest.raises(ValueError, match="exceeds in_features"):
        apply_holinear(model, ["down", "up"], order=24)  # down (32 in) fits, up (16 in) does not
    assert not any(isinstance(m, HOLinear) for m in model.modules())


def test_save_load_round_trip_quanta(tmp_path):
    model = tiny()
    apply_quanta(model, ["q_proj", "up"], n_axes=2, dropout=0.1)
    randomize(model)
    model.eval()
    expected = model(X)
    folder = save_adapter(model, tmp_path / "adapter")

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["target_modules"]["layers.1.up"] == {"method": "quanta", "dims": [4, 4], "out_dims": [8, 4], "dropout": 0.1}
    assert set(config["target_modules"]) == {"layers.0.q_proj", "layers.1.q_proj", "layers.0.up", "layers.1.up"}
    saved = load_file(folder / "adapter_model.safetensors")
    assert set(saved) == set(adapter_state_dict(model))
    assert all("quanta_" in k for k in saved)  # adapter tensors only, no base weights

    fresh = tiny()  # same base weights, fresh random gates
    load_adapter(fresh, folder).eval()
    torch.testing.assert_close(fresh(X), expected)
    assert trainable_parameters(fresh) == trainable_parameters(model)
    assert fresh.layers[0].up.dropout.p == 0.1

    load_adapter(fresh, folder)  # already adapted with the same spec: reused, loaded again
    torch.testing.assert_close(fresh(X), expected)


def test_save_load_round_trip_mixed(tmp_path):
    model = tiny()
    apply_quanta(model, "q_proj", dims=(2, 8))
    apply_holinear(model, "up", order=2, train="high_order")
    apply_holinear(model, "down", order=4, train="all")
    randomize(model)
    expected = model(X)
    save_adapter(model, tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert "layers.0.up.ho_scale" in saved and "layers.0.up.weight" not in saved
    assert {"layers.1.down.ho_scale", "layers.1.down.weight", "layers.1.down.bias"} <= set(saved)

    fresh = load_adapter(tiny(), tmp_path)
    torch.testing.assert_close(fresh(X), expected)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_load_errors_are_clear(tmp_path):
    model = tiny()
    apply_quanta(model, "q_proj", dims=(4, 4))
    save_adapter(model, tmp_path)
    weights = tmp_path / "adapter_model.safetensors"

    with pytest.raises(ValueError, match="which Block does not have"):
        load_adapter(Block(), tmp_path)

    tensors = load_file(weights)
    del tensors["layers.1.q_proj.quanta_S.0"]
    tensors["layers.1.q_proj.quanta_T.9"] = torch.zeros(1)
    save_file(tensors, weights)
    message = r"missing keys \['layers\.1\.q_proj\.quanta_S\.0'\], unexpected keys \['layers\.1\.q_proj\.quanta_T\.9'\]"
    with pytest.raises(ValueError, match=message):
        load_adapter(tiny(), tmp_path)

    tensors = load_file(weights)
    tensors["layers.1.q_proj.quanta_S.0"] = torch.zeros(4, 4, 2, 8)
    del tensors["layers.1.q_proj.quanta_T.9"]
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"quanta_S\.0 has shape \(4, 4, 2, 8\), the model expects \(4, 4, 4, 4\)"):
        load_adapter(tiny(), tmp_path)

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["target_modules"]["layers.0.q_proj"]["dims"] = [4, 8]
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"layers\.0\.q_proj.*\(4, 8\) multiply to 32, but the layer has 16 input"):
        load_adapter(tiny(), tmp_path)

    with pytest.raises(ValueError, match="no adapter layer"):
        save_adapter(tiny(), tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(tiny(), tmp_path / "empty")


def test_merge_and_unload():
    model = tiny()
    apply_quanta(model, ["q_proj", "down"], n_axes=2)
    apply_holinear(model, "layers.0.up", order=2)  # ho_scale stays 0: a Linear in disguise
    apply_holinear(model, "layers.1.up", order=2)
    randomize(model)
    with torch.no_grad():
        model.layers[0].up.ho_scale.zero_()
    expected = model(X)
    merged = merge_and_unload(model)
    assert merged is model
    assert not any(isinstance(m, QuanTALinear) for m in model.modules())
    assert type(model.layers[0].q_proj) is nn.Linear and type(model.layers[1].down) is nn.Linear
    assert type(model.layers[0].up) is nn.Linear
    assert isinstance(model.layers[1].up, HOLinear)  # nonzero ho_scale: cannot be one matrix
    torch.testing.assert_close(model(X), expected, rtol=1e-5, atol=1e-5)


def test_gpt2_conv1d_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0
    )

    def gpt2():
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(config).eval()

    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    model = gpt2()
    base_logits = model(ids).logits
    report = apply_quanta(model, ["c_attn", "mlp.c_proj"])
    assert len(report.replaced) == 4 and {e.old_type for e in report.replaced} == {"Conv1D"}
    assert model.transformer.h[0].attn.c_attn.out_dims == (6, 4, 2, 2)  # 32 -> 96, non-square
    torch.testing.assert_close(model(ids).logits, base_logits, rtol=0, atol=1e-5)

    randomize(model)
    tuned = model(ids).logits
    assert not torch.allclose(tuned, base_logits, atol=1e-3)
    save_adapter(model, tmp_path)
    torch.testing.assert_close(load_adapter(gpt2(), tmp_path)(ids).logits, tuned)
    torch.testing.assert_close(merge_and_unload(model)(ids).logits, tuned, rtol=1e-4, atol=1e-4)


def test_configs_are_the_apply_functions_and_each_knows_its_layers(tmp_path):
    model, same = tiny(), tiny()
    apply_adapter(model, QuanTAConfig(target_modules=["q_proj"], n_axes=2, dropout=0.1))
    apply_quanta(same, ["q_proj"], n_axes=2, dropout=0.1)
    apply_adapter(model, HOLinearConfig(target_modules="up", order=2, train="high_order"), names=["layers.0.down"])
    apply_holinear(same, ["up", "layers.0.down"], order=2, train="high_order")
    assert adapter_state_dict(model).keys() == adapter_state_dict(same).keys()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in same.named_parameters() if p.requires_grad}
    kinds = {name: ADAPTERS[spec["method"]] for name, spec in
             json.loads((save_adapter(model, tmp_path) / "adapter_config.json").read_text())["target_modules"].items()}
    assert kinds == {**{f"layers.{i}.q_proj": QuanTAConfig for i in (0, 1)},
                     **{f"layers.{i}.up": HOLinearConfig for i in (0, 1)}, "layers.0.down": HOLinearConfig}
    assert QuanTAConfig.of_layer(model.layers[1].q_proj) == QuanTAConfig(dims=[4, 4], out_dims=[4, 4], dropout=0.1)

    fresh = tiny()
    apply_quanta(fresh, "layers.0.q_proj", dims=(2, 8))
    with pytest.raises(ValueError, match=r"module 'layers\.0\.q_proj' is a QuanTALinear with dims \[2, 8\]"):
        load_adapter(fresh, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    del config["target_modules"]["layers.0.up"]["train"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"module 'layers\.0\.up' lacks \['train'\]"):
        load_adapter(tiny(), tmp_path)
