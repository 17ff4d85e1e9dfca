"""Routing client of the layers: rl4co envs, HO layers in any rl4co policy (`apply_ho`), MatNet/AM
policies from config, training and evaluation (see envs.py, placement.py, policies.py, train.py,
decode.py, evaluate.py; figures.py and report.py draw and tabulate the results)."""


def __getattr__(name: str):
    """`ho_co.routing.apply_ho`, imported on first use (it imports rl4co)."""
    if name == "apply_ho":
        from ho_co.routing.placement import apply_ho

        return apply_ho
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["apply_ho"]
