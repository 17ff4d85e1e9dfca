"""The language-model client of the layers: fine-tuning (c2q, QuanTA, LoRA, full), evaluation,
and the from-scratch HO-LLM comparison. transformers/PEFT are imported only when used
(the `llm` extra); the names below load lazily, so the command line reads the configs and the
method registry without importing torch."""

from importlib import import_module

_EXPORTS = {
    "METHODS": "ho_co.llm.methods",
    "FinetuneConfig": "ho_co.llm.finetune",
    "MethodSpec": "ho_co.llm.methods",
    "PretrainConfig": "ho_co.llm.pretrain",
    "apply_method": "ho_co.llm.methods",
    "finetune": "ho_co.llm.finetune",
    "load_finetuned": "ho_co.llm.models",
    "load_pretrained": "ho_co.llm.models",
    "multiple_choice": "ho_co.llm.lm_eval",
    "perplexity": "ho_co.llm.lm_eval",
    "pretrain": "ho_co.llm.pretrain",
    "save_finetuned": "ho_co.llm.models",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ho_co.llm' has no attribute {name!r}")
