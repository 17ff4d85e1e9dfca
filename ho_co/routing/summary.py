"""What a finished `ho-co train` run got, said once at the end: the validation gap greedy and with
augmentation against the reference tours, how much training it took, where the weights are, and
the `ho-co eval` command that reproduces the number. Written to `summary.json` and drawn (the
validation tours beside their reference tours) in the run directory; `ho-co train` prints it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from ho_co.routing.callbacks import LastCheckpoint, LearningCurve


class RunSummary(Callback):
    """At the end of training, decode the learning curve's validation set once more (multi-start
    greedy, then best of `num_augment` augmentations) and write `summary.json` + `tours.png`.

    Runs on the training device before Lightning tears the run down; rank 0 only. Needs the
    `LearningCurve` callback with `instances` and `reference`; without them there is no gap to
    report and it does nothing.
    """

    def __init__(self, out_dir: str, num_augment: int = 8, tours_to_draw: int = 4):
        self.out_dir = Path(out_dir)
        self.num_augment, self.tours_to_draw = num_augment, tours_to_draw
        self.summary: dict[str, Any] | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        curve = next((c for c in trainer.callbacks if isinstance(c, LearningCurve)), None)
        if not trainer.is_global_zero or curve is None or not (curve.instances_path and curve.reference_path):
            return
        from ho_co.problems import mean_gap
        from ho_co.routing.decode import decode
        from ho_co.routing.figures import render_tours

        inst, ref = curve.validation_set(pl_module.env)
        decoded = decode(pl_module.policy, pl_module.env, inst, num_augment=self.num_augment,
                         batch_size=curve.batch_size, seed=curve.seed, device=pl_module.device)
        last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        checkpoint = last.last_model_path if last else ""
        summary = {
            "validation_set": str(curve.instances_path),
            "reference": str(curve.reference_path),
            "reference_solver": ref.solver,
            "num_instances": len(inst),
            "reference_mean_length": float(ref.lengths.mean()),
            "greedy_mean_length": float(decoded.plain_lengths.mean()),
            "greedy_gap_percent": mean_gap(decoded.plain_lengths, ref.lengths),
            "num_augment": self.num_augment,
            "augmented_mean_length": float(decoded.lengths.mean()),
            "augmented_gap_percent": mean_gap(decoded.lengths, ref.lengths),
            "instances_seen": curve.instances_seen,
            "wall_minutes": curve.wall_s / 60,
            "device": curve.rows[-1]["device"] if curve.rows else str(pl_module.device),
            "checkpoint": checkpoint,
            "learning_curve": str(curve.curve_file),
            "reproduce": eval_command(checkpoint, curve.instances_path, curve.reference_path, self.num_augment,
                                      curve.batch_size, curve.seed, pl_module.device),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if inst.locs is not None and self.tours_to_draw > 0:
            drawn = {"policy": (decoded.plain_tours, decoded.plain_lengths), ref.solver: (ref.tours, ref.lengths)}
            summary["tours_png"] = str(render_tours(inst, drawn, self.out_dir / "tours.png", self.tours_to_draw))
        if curve.plot_file is not None and curve.plot_file.is_file():
            summary["learning_curve_png"] = str(curve.plot_file)
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.summary = summary


def eval_command(checkpoint: str, instances: str, reference: str, num_augment: int, batch_size: int = 256,
                 seed: int = 0, device="cpu") -> str:
    """The one command that reproduces the augmented gap from the saved weights: MatNet's random
    one-hot draws are seeded per batch, so the batch size and seed are part of the number."""
    args = ["ho-co", "eval", "--checkpoint", checkpoint, "--instances", instances, "--reference", reference,
            "--augment", str(num_augment), "--batch-size", str(batch_size), "--seed", str(seed)]
    if str(device) != "cpu":
        args += ["--device", str(device)]
    return " ".join(shlex.quote(str(a)) for a in args)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few lines for the terminal."""
    lines = [
        f"validation: {summary['num_instances']} instances of {summary['validation_set']} "
        f"against {summary['reference_solver']} (mean {summary['reference_mean_length']:.4f})",
        f"  greedy (multi-start)   gap {summary['greedy_gap_percent']:.3f}%  mean length {summary['greedy_mean_length']:.4f}",
        f"  best of {summary['num_augment']} augmentations gap {summary['augmented_gap_percent']:.3f}%  "
        f"mean length {summary['augmented_mean_length']:.4f}",
        f"training: {summary['instances_seen']:,} instances, {summary['wall_minutes']:.1f} min on {summary['device']}",
        f"checkpoint: {summary['checkpoint']}",
    ]
    pictures = [summary[k] for k in ("learning_curve_png", "tours_png") if k in summary]
    if pictures:
        lines.append("pictures: " + ", ".join(pictures))
    lines.append(f"reproduce: {summary['reproduce']}")
    return "\n".join(lines)
