"""What the LLM tests compare between two models: logits and loss on a batch, in eval mode."""

import torch


@torch.no_grad()
def logits(model, batch):
    model.eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@torch.no_grad()
def loss(model, batch):
    model.eval()
    return float(model(**batch).loss)
