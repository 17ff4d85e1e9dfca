"""How to spend a CPU's cores on POMO training: one training on all of them, or one per core.

Runs the raw training step (forward, POMO's shared-baseline REINFORCE loss, backward, Adam) of
ho-co's fast MatNet at the TSP-50 CPU size for a fixed time, in one process with --threads
threads, or (--side-by-side) as one single-threaded process per core pinned with taskset, and
prints instances/s (the sum over processes for side by side). Run both forms back to back.

    python benchmarks/cpu_threads.py --threads 2 --batch 64
    python benchmarks/cpu_threads.py --side-by-side --batch 64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch


def steps(batch: int, seconds: float, ho: bool) -> float:
    from ho_co.routing.cpu import keep_freed_memory
    from ho_co.routing.envs import make_env
    from ho_co.routing.policies import build_policy

    keep_freed_memory()  # the kept heap of `ho-co train` on a CPU (subnormals as the CPU leaves them)
    env = make_env("tsp", 50)
    torch.manual_seed(0)
    policy = build_policy("matnet", fast=True, embed_dim=128, num_encoder_layers=3, num_heads=8,
                          feedforward_hidden=512, ho={"order": 2, "targets": ["attention", "ffn"]} if ho else None)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-4)

    def step():
        td = env.reset(env.generator(batch))
        out = policy(td, env, phase="train", decode_type="multistart_sampling")
        reward, ll = out["reward"].view(-1, batch), out["log_likelihood"].view(-1, batch)
        loss = -((reward - reward.mean(0)) * ll).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up (kernel builds, allocator)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return done * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--ho", action="store_true", help="HO-MatNet instead of MatNet")
    p.add_argument("--side-by-side", action="store_true", help="one 1-thread process per core (taskset)")
    args = p.parse_args()
    if not args.side_by_side:
        torch.set_num_threads(args.threads)
        print(f"one training, {args.threads} threads, batch {args.batch}: {steps(args.batch, args.seconds, args.ho):.1f} "
              "instances/s", flush=True)
        return
    cores = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--threads", "1", "--batch", str(args.batch), "--seconds", str(args.seconds)]
    cmd += ["--ho"] if args.ho else []
    procs = [subprocess.Popen(["taskset", "-c", str(c), *cmd], env=env, stdout=subprocess.PIPE, text=True) for c in cores]
    rates = []
    for c, proc in zip(cores, procs):
        line = proc.communicate()[0].strip()
        print(f"core {c}: {line}")
        rates.append(float(line.split(": ")[1].split()[0]))
    print(f"side by side, {len(cores)} trainings, batch {args.batch}: {sum(rates):.1f} instances/s in total")


if __name__ == "__main__":
    main()
