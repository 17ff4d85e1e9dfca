"""Suite-wide isolation: rl4co's trainer sets torch's float32 matmul precision process-wide
("medium": bf16 matmuls on CPUs that have them), which would leak from any training (a test's
or a session fixture's) into later tests. Every test starts at torch's default."""

import pytest
import torch


@pytest.fixture(autouse=True)
def full_precision_matmuls():
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision("highest")
