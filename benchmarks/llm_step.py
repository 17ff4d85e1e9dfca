"""One training step of each fine-tuning method on the packaged model, side by side.

    python benchmarks/llm_step.py                       # SmolLM2-135M, batch 8 x 64 tokens, all threads
    taskset -c 0 python benchmarks/llm_step.py --threads 1   # one core, as ho-co llm-experiment runs
    python benchmarks/llm_step.py --quick               # 2 layers, batch 2 x 16: checks the script runs

A step is what the Trainer does per batch: forward with the labels, backward, AdamW step, zero
the gradients, on one fixed batch of random tokens. The cases are the variants of `ho-co
llm-experiment` (full, c2q-2, c2q-4, lora-8, lora-qp: LoRA at QuanTA's parameter count, quanta),
each on its own copy of the model, every linear layer but the output head adapted. They take
turns round after round (benchmarks/timing.py), so the ratios hold on a shared machine better
than the absolute times. Printed: the median seconds per step, each case as a ratio to the LoRA
step of (about) QuanTA's parameter count, and C2Q's as a ratio to the full fine-tuning step (the
targets: QuanTA at most 1.3x that LoRA, C2Q of order 2 at most 1.3x full).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch

from timing import interleaved, median_ratio, medians, timed

CASES = ("full", "c2q-2", "c2q-4", "lora-8", "lora-qp", "quanta")


def trim_layers(model, n_layers: int):
    """Keep the first `n_layers` decoder layers (a LLaMA-style model), for a quick run."""
    layers = model.model.layers
    model.model.layers = type(layers)(list(layers)[:n_layers])
    model.config.num_hidden_layers = n_layers
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:n_layers]
    return model


def build_cases(base, names, lr: float = 1e-6):
    """{name: (model, optimizer)} for each case, each on its own deep copy of `base`."""
    from ho_co.adapters import trainable_parameters
    from ho_co.llm.experiment import ExperimentConfig, lora_rank_for, quanta_parameters, variant_spec
    from ho_co.llm.methods import apply_method

    config = ExperimentConfig()
    quanta_count = quanta_parameters(base, variant_spec("quanta", config))
    rank, _ = lora_rank_for(base, quanta_count)
    cases, info = {}, {"lora_qp_rank": rank, "quanta_parameters": quanta_count}
    for name in names:
        spec = variant_spec(name, config, rank)
        model = apply_method(copy.deepcopy(base), spec).train()
        params = [p for p in model.parameters() if p.requires_grad]
        cases[name] = (model, torch.optim.AdamW(params, lr=lr))
        info[name] = {"trainable_parameters": trainable_parameters(model)[0], "spec": spec.to_dict()}
    return cases, info


def make_step(model, optimizer, batch):
    def step():
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="any model ho-co loads (default: the packaged one)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64, help="tokens per example")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--layers", type=int, help="keep only the first N decoder layers")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--quick", action="store_true", help="2 layers, batch 2 x 16, 1 round: checks the script")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.batch, args.seq, args.rounds, args.warmup = 2, 2, 16, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ho_co.llm.models import load_pretrained

    start = time.perf_counter()
    base, _ = load_pretrained(args.model)
    if args.layers:
        trim_layers(base, args.layers)
    print(f"{args.model}: {sum(p.numel() for p in base.parameters()):,} parameters, "
          f"{base.config.num_hidden_layers} layers, loaded in {time.perf_counter() - start:.1f} s; "
          f"batch {args.batch} x {args.seq} tokens, {torch.get_num_threads()} thread(s)", flush=True)
    names = list(args.cases)
    if "lora-qp" not in names:
        names.append("lora-qp")  # the reference
    cases, info = build_cases(base, names)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), generator=gen)
    times = interleaved({name: timed(make_step(*cases[name], batch)) for name in names}, args.rounds, args.warmup)
    med = medians(times)
    print(f"lora-qp: rank {info['lora_qp_rank']} for QuanTA's {info['quanta_parameters']:,} parameters")
    print(f"{'case':8} {'trainable':>12} {'s/step':>8} {'/ lora-qp':>10} {'/ full':>8}")
    rows = {}
    for name in names:
        if name not in med:
            continue
        to_lora = median_ratio(times, name, "lora-qp")
        to_full = median_ratio(times, name, "full") if name.startswith("c2q") and "full" in med else None
        rows[name] = {"trainable_parameters": info[name]["trainable_parameters"], "seconds": med[name],
                      "ratio_to_lora_qp": to_lora, "ratio_to_full": to_full}
        print(f"{name:8} {info[name]['trainable_parameters']:>12,} {med[name]:8.3f} {to_lora:10.2f} "
              + (f"{to_full:8.2f}" if to_full is not None else f"{'':>8}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "lora_qp_rank": info["lora_qp_rank"], "cases": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
