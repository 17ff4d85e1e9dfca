"""What the LLM tests compare between two models (logits and loss on a batch, in eval mode), and
how they make a fresh adapter differ from its base."""

import torch


@torch.no_grad()
def logits(model, batch):
    model.eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@torch.no_grad()
def loss(model, batch):
    model.eval()
    return float(model(**batch).loss)


def perturb_trainable(model, seed=0):
    """Make adapters non-trivial (LoRA B and QuanTA T - S start at zero) without training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
