"""HO-LLM from scratch: a small GPT-2 with HOLinear (order 2, 4, ...) against the baseline.

Every variant starts from the same GPT-2 initialization (same seed) and sees the same token
blocks in the same order; the only difference is the operator in the target layers: order 1
keeps GPT-2's linear (Conv1D) layers, order K replaces them by the exact HOLinear operator
prod_i(1 + W_i x_i) - 1 + b with the same initial weights. Each variant is trained by the
transformers Trainer (progress bar, checkpoints, resume) and evaluated every `eval_steps` on
held-out text; `curves.csv` and `loss_curves.png` put the curves side by side.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ho_co.llm.data import read_text, text_blocks

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """One comparison; every field is settable from the command line (`ho-co pretrain`)."""

    text: str = field(metadata={"help": "training text file"})
    output: str = field(metadata={"help": "directory for runs, curves.csv, loss_curves.png"})
    val_text: str | None = field(default=None, metadata={"help": "None: the last val_fraction of the tokens of text"})
    val_fraction: float = 0.1
    orders: list[int] = field(default_factory=lambda: [1, 2, 4], metadata={"help": "1 = baseline"})
    targets: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    tokenizer: str | None = field(default=None, metadata={"help": "None: train a byte-level BPE on text"})
    vocab_size: int = 1024
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    block_size: int = 128
    batch_size: int = 16
    max_steps: int = 1000
    eval_steps: int = 100
    lr: float = 1e-3
    seed: int = 0
    resume: bool = False
    use_cpu: bool = False


def _tokenizer(config: PretrainConfig):
    from transformers import AutoTokenizer

    from ho_co.llm.tokenizer import train_tokenizer

    if config.tokenizer:
        return AutoTokenizer.from_pretrained(config.tokenizer)
    saved = Path(config.output) / "tokenizer"
    if saved.is_dir():  # resume: the same vocabulary as the interrupted run
        return AutoTokenizer.from_pretrained(saved)
    return train_tokenizer([read_text(config.text)], config.vocab_size, save_dir=saved)


def token_blocks(config: PretrainConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """(train, validation) blocks of `block_size` tokens."""
    from ho_co.llm.data import text_token_ids

    ids = text_token_ids(config.text, tokenizer)
    if config.val_text:
        train_ids, val_ids = ids, text_token_ids(config.val_text, tokenizer)
        val_name = config.val_text
    else:
        if not 0 < config.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {config.val_fraction}")
        cut = int(len(ids) * (1 - config.val_fraction))
        train_ids, val_ids = ids[:cut], ids[cut:]
        val_name = f"{config.text} (last {config.val_fraction:.0%})"
    return (text_blocks(train_ids, config.block_size, config.text, "block_size"),
            text_blocks(val_ids, config.block_size, val_name, "block_size"))


def build_model(config: PretrainConfig, vocab_size: int, order: int):
    """GPT-2 of the configured size; order > 1 puts HOLinear in the target layers."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from ho_co import HOLinear, replace_linear
    from ho_co.llm.models import declare_causal_lm_loss

    def exact_ho(linear) -> HOLinear:
        """The paper's operator (no `ho_scale`, unlike `HOLinear.from_linear`) on the baseline's
        initial weights: a from-scratch HOLinear takes a Linear's state dict as it is."""
        layer = HOLinear(linear.in_features, linear.out_features, order=order, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        layer.load_state_dict(linear.state_dict())
        return layer

    torch.manual_seed(config.seed)
    gpt = GPT2Config(vocab_size=vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, bos_token_id=None, eos_token_id=None)
    model = declare_causal_lm_loss(GPT2LMHeadModel(gpt))
    if order > 1:
        report = replace_linear(model, exact_ho, targets=config.targets)
        if report.skipped:
            raise ValueError(f"order {order} does not fit every target layer:\n{report}")
    return model


def train_variant(config: PretrainConfig, order: int, tokenizer, train, val) -> list[dict]:
    """Train one variant; returns its log history (train `loss` and `eval_loss` by step)."""
    from transformers import Trainer, TrainingArguments, default_data_collator
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.output) / f"order{order}"
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(100, config.max_steps // 10),
        weight_decay=0.1,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        eval_on_start=True,
        logging_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=1,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=config.use_cpu,
    )
    model = build_model(config, len(tokenizer), order)
    trainer = Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=val,
        data_collator=default_data_collator,
    )
    last = get_last_checkpoint(str(out)) if config.resume and out.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    evaluated = [e["step"] for e in trainer.state.log_history if "eval_loss" in e]
    if not evaluated or evaluated[-1] != trainer.state.global_step:
        trainer.evaluate()
    return trainer.state.log_history


def curves(history: list[dict]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, validation) loss points (step, loss) from a Trainer log history."""
    train = [(e["step"], float(e["loss"])) for e in history if "loss" in e]
    val = sorted({e["step"]: float(e["eval_loss"]) for e in history if "eval_loss" in e}.items())
    return train, val


def plot(results: dict[int, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for order, history in results.items():
        train, val = curves(history)
        label = "baseline (Linear)" if order == 1 else f"HOLinear order {order}"
        if train:
            ax_train.plot(*zip(*train), label=label)
        ax_val.plot(*zip(*val), marker="o", label=label)
    for ax, title in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax_train.set_ylabel("cross-entropy (nats/token)")
    ax_val.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pretrain(config: PretrainConfig) -> dict:
    """Train every order in `config.orders`; writes curves.csv, loss_curves.png, summary.json."""
    if not config.orders or any(not isinstance(k, int) or k < 1 for k in config.orders):
        raise ValueError(f"orders must be integers >= 1 (1 = baseline), got {config.orders}")
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(config)
    train, val = token_blocks(config, tokenizer)
    log.info("%d training and %d validation blocks of %d tokens", len(train), len(val), config.block_size)

    results = {order: train_variant(config, order, tokenizer, train, val) for order in config.orders}

    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["order", "step", "split", "loss"])
        for order, history in results.items():
            train_pts, val_pts = curves(history)
            writer.writerows([order, s, "train", l] for s, l in train_pts)
            writer.writerows([order, s, "validation", l] for s, l in val_pts)
    plot(results, out / "loss_curves.png")
    summary = {
        "config": asdict(config),
        "final_val_loss": {order: curves(h)[1][-1][1] for order, h in results.items()},
        "best_val_loss": {order: min(l for _, l in curves(h)[1]) for order, h in results.items()},
        # wall time of this invocation's training (after a resume: only the resumed part)
        "train_runtime_s": {order: next((e["train_runtime"] for e in reversed(h) if "train_runtime" in e), None)
                            for order, h in results.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
