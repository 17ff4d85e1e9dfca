"""A small byte-level BPE tokenizer trained on local text files.

Why: our machines have no hub access, yet pretraining from scratch and the tests need a real
`PreTrainedTokenizerFast` (padding, EOS, save/load with `from_pretrained`). Byte-level BPE
encodes any text without unknown tokens, like GPT-2's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, save_dir: str | Path | None = None):
    """Train byte-level BPE on `texts`; returns a `PreTrainedTokenizerFast` (saved if `save_dir`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise ValueError("cannot train a tokenizer on empty text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD)
    if save_dir is not None:
        fast.save_pretrained(str(save_dir))
    return fast
