"""The language-model client of the layers: fine-tuning (c2q, QuanTA, LoRA, full), evaluation,
and the from-scratch HO-LLM comparison. transformers/PEFT are imported only when used
(the `llm` extra)."""

from ho_co.llm.finetune import FinetuneConfig, finetune
from ho_co.llm.lm_eval import multiple_choice, perplexity
from ho_co.llm.methods import METHODS, MethodSpec, apply_method
from ho_co.llm.pretrain import PretrainConfig, pretrain
from ho_co.llm.models import load_finetuned, load_pretrained, save_finetuned

__all__ = [
    "METHODS",
    "FinetuneConfig",
    "MethodSpec",
    "PretrainConfig",
    "apply_method",
    "finetune",
    "load_finetuned",
    "load_pretrained",
    "multiple_choice",
    "perplexity",
    "pretrain",
    "save_finetuned",
]
