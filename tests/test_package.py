"""Package-level contracts: import direction and the CLI's command list."""

import subprocess
import sys

from ho_co.cli import build_parser


def test_layers_replace_and_adapters_import_only_torch():
    code = (
        "import sys, ho_co, ho_co.layers, ho_co.replace, ho_co.adapters\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'rl4co', 'transformers', 'peft', 'lightning', 'hydra'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_lists_the_subcommands():
    help_text = build_parser().format_help()
    for command in ("train", "eval", "make-data", "solve", "finetune", "lm-eval", "pretrain"):
        assert command in help_text
