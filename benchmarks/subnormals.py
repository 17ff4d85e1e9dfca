"""Subnormal floats on a CPU: ho-co's decode and training step with and without flushing them.

`ho-co train` and `ho-co eval` flush subnormals to zero on a CPU (ho_co.routing.cpu.flush_denormals).
This runs, in one fresh single-thread process per arm (the flag belongs to the thread and stays
set), alternating the arms for --rounds rounds: (a) `ho-co eval` of a shipped checkpoint on the
first --count instances of a file, (b) --steps POMO training steps of the same policy on fresh
instances of that size. It prints the medians, the ratio keep / flush, and whether both arms
decode the same tours.

    python benchmarks/subnormals.py --checkpoint checkpoints/ho_matnet_atsp50.ckpt \\
        --instances data/atsp50_heldout.npz --count 64 --augment 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ARM = r"""
import json, sys, time, numpy as np, torch
import ho_co.routing.cpu as cpu
import ho_co.routing.evaluate as evaluate
from ho_co.routing.policies import policy_from_checkpoint

mode, checkpoint, instances, augment, steps, batch, tours_out = sys.argv[1:]
if mode == "keep":
    cpu.flush_denormals = lambda: False  # settle_cpu_process keeps the heap setting only
result = evaluate.evaluate(checkpoint, instances, num_augment=int(augment), progress=False, out=tours_out)
# the training step: the evaluation above set the process up as `ho-co train` does
policy, env, _ = policy_from_checkpoint(checkpoint)
policy.train()
optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)
torch.manual_seed(0)
times = []
for _ in range(int(steps) + 1):
    start = time.process_time()
    td = env.reset(env.generator(int(batch)))
    out = policy(td, env, phase="train", decode_type="multistart_sampling")
    reward, ll = out["reward"].view(-1, int(batch)), out["log_likelihood"].view(-1, int(batch))
    loss = -((reward - reward.mean(0)) * ll).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    times.append(time.process_time() - start)
print(json.dumps({"decode_ms": result["time_per_instance_ms"], "step_s": float(np.median(times[1:]))}))
"""


def run_arm(mode: str, args, tours_out: str) -> dict:
    cmd = [sys.executable, "-c", ARM, mode, args.checkpoint, args.instances, str(args.augment), str(args.steps),
           str(args.batch), tours_out]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the {mode} arm failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/ho_matnet_atsp50.ckpt")
    p.add_argument("--instances", default="data/atsp50_heldout.npz")
    p.add_argument("--count", type=int, default=64, help="first instances of the file decoded")
    p.add_argument("--augment", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="training steps timed (after one warm-up)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = np.load(args.instances)
        subset = os.path.join(tmp, "instances.npz")
        np.savez(subset, **{key: data[key][: args.count] for key in data.files})
        args.instances = subset
        rows = {"flush": [], "keep": []}
        for _ in range(args.rounds):
            for mode in rows:
                rows[mode].append(run_arm(mode, args, os.path.join(tmp, f"{mode}.npz")))
        same = all(np.array_equal(np.load(os.path.join(tmp, "flush.npz"))[k], np.load(os.path.join(tmp, "keep.npz"))[k])
                   for k in ("tours", "lengths"))
    for what, unit in (("decode_ms", "ms/instance"), ("step_s", "CPU-s/step")):
        flush, keep = (statistics.median(r[what] for r in rows[m]) for m in ("flush", "keep"))
        print(f"{what}: flush {flush:.3f} {unit}, keep {keep:.3f} {unit}, keep / flush {keep / flush:.2f}x")
    print(f"same tours and lengths: {same}")


if __name__ == "__main__":
    main()
