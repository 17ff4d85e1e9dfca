"""Fine-tune a Hugging Face causal LM with c2q, QuanTA, LoRA or full training.

One function, `finetune(config)`: load model and tokenizer, apply the method, train with the
transformers `Trainer` (progress bar, checkpoints every `save_steps` under
`OUTPUT/checkpoints`, `resume=True` continues from the latest), then `save_finetuned` so the
result reloads with `load_finetuned(OUTPUT)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ho_co.llm.data import PROMPT_FORMATS
from ho_co.llm.methods import METHODS, MethodSpec
from ho_co.llm.sources import DEFAULT_MODEL

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class FinetuneConfig:
    """One fine-tuning run; every field is settable from the command line (`ho-co finetune`)."""

    data: str = field(metadata={"help": "Alpaca .json/.jsonl (prompt masked) or plain .txt"})
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "local model directory, hub name, .gguf file or packaged model (smollm2-135m)"})
    output: str | None = field(default=None, metadata={"help": "output directory (None: runs/finetune-METHOD)"})
    spec: MethodSpec = field(default_factory=lambda: MethodSpec("c2q"))
    eval_data: str | None = field(default=None, metadata={"help": "held-out file in the same formats, evaluated each epoch"})
    epochs: float = 3.0
    max_steps: int = field(default=-1, metadata={"help": "> 0: stop after this many steps (overrides epochs)"})
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = field(default=None, metadata={"help": "learning rate (None: the method's usual one)"})
    max_length: int = field(default=512, metadata={"help": "tokens per example (capped at the model's)"})
    prompt: str = field(default="auto", metadata={
        "choices": PROMPT_FORMATS, "help": "instruction prompts: alpaca, chat (the tokenizer's chat template), "
                                           "auto (chat when the tokenizer has one)"})
    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    merge: bool = field(default=False, metadata={"help": "lora/quanta: save a merged plain model"})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in OUTPUT"})
    seed: int = 42
    save_steps: int = field(default=500, metadata={"help": "checkpoint every N steps"})
    logging_steps: int = 10
    use_cpu: bool = False

    def __post_init__(self) -> None:
        if self.output is None:
            self.output = f"runs/finetune-{self.spec.method}"
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.prompt not in PROMPT_FORMATS:
            raise ValueError(f"prompt must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt!r}")


def check_spec(model: str, spec: MethodSpec) -> list[str]:
    """The module names `spec` adapts in `model`, resolved on a weightless (meta-device) copy
    built from the config alone; each is checked against the method's layer (QuanTA's dims must
    factor its features, HOLinear's order must not exceed its width). ValueError naming the
    module, before any weight is loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    from ho_co.llm.methods import target_names
    from ho_co.llm.sources import model_config
    from ho_co.replace import replace_linear

    config = model_config(model)  # a GGUF file: dequantized into the cache first (not on meta)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    names = target_names(skeleton, spec)
    method = METHODS[spec.method]
    if hasattr(method, "layer_config"):  # c2q, quanta: ho-co's own layers
        try:
            replace_linear(skeleton, lambda linear: linear, names=names, dry_run=True,
                           check=method.layer_config(spec).check)
        except ValueError as err:
            raise ValueError(f"{spec.method}: {err}") from None
    return names


def build_trainer(model, tokenizer, train_examples, config: FinetuneConfig, eval_examples=None):
    """The transformers Trainer for `model` on tokenized examples (see `data.load_examples`)."""
    from transformers import Trainer, TrainingArguments

    from ho_co.llm.data import make_collator

    args = TrainingArguments(
        output_dir=str(Path(config.output) / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr if config.lr is not None else METHODS[config.spec.method].lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        eval_strategy="epoch" if eval_examples is not None else "no",
        report_to="none",
        seed=config.seed,
        use_cpu=config.use_cpu,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_examples,
        eval_dataset=eval_examples,
        data_collator=make_collator(tokenizer),
        processing_class=tokenizer,
    )


def finetune(config: FinetuneConfig) -> dict:
    """Train and save; returns a summary (output dir, losses, parameter counts)."""
    from transformers import set_seed

    from ho_co.adapters import trainable_parameters
    from ho_co.llm.data import DataError, context_length, load_examples
    from ho_co.llm.methods import apply_method
    from ho_co.llm.models import load_pretrained, save_finetuned

    if config.merge and not METHODS[config.spec.method].adapter:
        adapters = " and ".join(sorted(name for name, method in METHODS.items() if method.adapter))
        raise ValueError(f"merge applies to the adapters {adapters}, not to {config.spec.method}")
    for path, option in ((config.data, "--data"), (config.eval_data, "--eval-data")):
        if path and not Path(path).is_file():  # before the model: loading one can take minutes
            raise DataError(f"{path}: no such data file ({option})")
    check_spec(config.model, config.spec)  # a bad dims/order fails before the weights load
    set_seed(config.seed)
    model, tokenizer = load_pretrained(config.model, config.dtype)
    max_length = context_length(model, config.max_length)
    train_examples = load_examples(config.data, tokenizer, max_length, config.prompt)
    eval_examples = load_examples(config.eval_data, tokenizer, max_length, config.prompt) if config.eval_data else None
    model = apply_method(model, config.spec)
    trainable, total = trainable_parameters(model)
    log.info("%s: %s trainable of %s parameters (%.3f%%)", config.spec.method, f"{trainable:,}", f"{total:,}",
             100 * trainable / total)

    trainer = build_trainer(model, tokenizer, train_examples, config, eval_examples)
    result = trainer.train(resume_from_checkpoint=True if config.resume else None)
    summary = {
        "output": str(config.output),
        "method": config.spec.method,
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    if eval_examples is not None:
        summary["eval_loss"] = trainer.evaluate()["eval_loss"]
    save_finetuned(trainer.model, tokenizer, config.output, config.spec, config.model, merge=config.merge)
    return summary
