"""Routing client of the layers: rl4co envs, MatNet/AM policies with HOLinear, training and
evaluation (see envs.py, policies.py, train.py, evaluate.py)."""
