"""Package-level contracts: import direction, the CLI's registry-made commands and its one error path."""

import argparse
import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

import ho_co
from ho_co.cli import COMMANDS, build_parser, main

PACKAGE = Path(ho_co.__file__).parent
ENGINE = "ho_co.routing.fast"
MODULES = {".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
           for path in PACKAGE.rglob("*.py")}


def loaded_after(imports: str, heavy: set[str]) -> set[str]:
    """Which of `heavy` (top-level packages, or exact module names) a fresh interpreter has
    loaded after running `imports`."""
    code = (
        f"import sys\n{imports}\n"
        f"heavy = {sorted(heavy)!r}\n"
        "print(','.join(h for h in heavy if h in sys.modules or h in {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(filter(None, out.stdout.strip().split(",")))


def test_layers_replace_and_adapters_import_only_torch():
    assert not loaded_after("import ho_co, ho_co.layers, ho_co.replace, ho_co.adapters",
                            {"rl4co", "transformers", "peft", "lightning", "hydra"})


def test_problems_and_solvers_import_no_torch():
    """Instance files, tours and the reference solvers are plain numpy: a solver worker, a
    baseline table or `ho-co solve` never pays for torch or the routing client, and importing a
    solver's module leaves its package (highspy, ortools, elkai) to the call, in the worker."""
    imports = (
        "import pkgutil, importlib, ho_co.problems, ho_co.solvers\n"
        "for pkg in (ho_co.problems, ho_co.solvers):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{pkg.__name__}.{m.name}')"
    )
    assert not loaded_after(imports, {"torch", "rl4co", "lightning", "tensordict", "highspy", "ortools", "elkai",
                                      "ho_co.routing"})


def imported_modules(path: Path) -> set[str]:
    """The ho_co modules a source file imports, at its top or inside a function: `from a import b`
    names the module a.b where b is one, else a."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                      for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names & MODULES.keys()


def in_engine(module: str) -> bool:
    return module == ENGINE or module.startswith(ENGINE + ".")


def test_imports_run_one_way():
    """No module imports one that imports it back, directly or around a loop, at the top or
    inside a function: each module can be read, and tested, without those that use it."""
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    for start in graph:
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop()
            for nxt in graph[path[-1]]:
                assert nxt != start, f"import loop: {' -> '.join(path + [start])}"
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append(path + [nxt])


def test_the_fast_engine_is_reached_through_policies_alone():
    """The lean CPU engine (`ho_co.routing.fast`) has one door in, `ho_co.routing.policies`, and
    needs nothing of the routing client around it: its files can change behind `make_fast`."""
    engine_dir = PACKAGE / "routing" / "fast"
    for path in PACKAGE.rglob("*.py"):
        if engine_dir in path.parents:
            client = {m for m in imported_modules(path) if m.split(".")[:2] == ["ho_co", "routing"] and not in_engine(m)}
            assert not client, f"{path.relative_to(PACKAGE)} imports the routing client: {sorted(client)}"
        elif path != PACKAGE / "routing" / "policies.py":
            inside = {m for m in imported_modules(path) if in_engine(m)}
            assert not inside, f"{path.relative_to(PACKAGE)} reaches into the engine ({sorted(inside)}): go through policies"


def test_every_package_and_kernel_source_ships():
    """A non-editable install carries only what pyproject.toml names: every package directory,
    and every C++ source (built at first use) by a package-data glob of its own package."""
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    dotted = lambda d: ".".join(d.relative_to(PACKAGE.parent).parts)
    assert {dotted(init.parent) for init in PACKAGE.rglob("__init__.py")} <= set(setup["packages"])
    sources = [*PACKAGE.rglob("*.cpp"), *PACKAGE.rglob("*.h")]
    assert len(sources) >= 6  # HOLinear's kernel, the engine's four and their shared header
    for src in sources:
        globs = setup["package-data"].get(dotted(src.parent), [])
        assert any(fnmatch.fnmatch(src.name, g) for g in globs), f"{src.relative_to(PACKAGE)} would not ship"


def test_building_the_cli_imports_no_torch():
    """`ho-co --help` and every command's start stay instant: the configs and the method
    registry the parser reads import nothing heavy."""
    assert not loaded_after("from ho_co.cli import build_parser\nbuild_parser()", {"torch", "transformers", "omegaconf"})
    assert loaded_after("import torch", {"torch"}) == {"torch"}  # the probe itself sees an import


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers


def test_every_registered_command_has_help():
    subparsers = _subcommands(build_parser())
    helps = {action.dest: action.help for action in subparsers._choices_actions}
    assert len(subparsers.choices) == len(COMMANDS)  # one subcommand per registered function, none lost
    assert set(helps) == set(subparsers.choices) and all(help.strip() for help in helps.values())


def test_finetune_method_choices_and_learning_rates_come_from_the_registry(monkeypatch):
    from ho_co.llm.methods import METHODS, Full

    class Extra(Full):
        name, lr = "extra", 3e-3

    monkeypatch.setitem(METHODS, "extra", Extra())
    finetune = _subcommands(build_parser()).choices["finetune"]
    options = {action.dest: action for action in finetune._actions}
    assert list(options["spec.method"].choices) == list(METHODS)
    assert "extra" in list(METHODS)
    for name, method in METHODS.items():
        assert f"{method.lr:g}" in options["lr"].help and name in options["lr"].help


def test_solver_and_problem_choices_come_from_the_registries(monkeypatch):
    from ho_co.problems import PROBLEMS
    from ho_co.solvers import SOLVERS, registry

    monkeypatch.setitem(SOLVERS, "extra", registry.SolverSpec("extra", "nowhere:solve", False, (), ""))
    commands = _subcommands(build_parser()).choices
    solver = next(a for a in commands["solve"]._actions if a.dest == "solver")
    problem = next(a for a in commands["make-data"]._actions if a.dest == "problem")
    assert list(solver.choices) == list(SOLVERS) and "extra" in solver.choices
    assert tuple(problem.choices) == PROBLEMS


@pytest.mark.parametrize("argv, message", [
    (["report", "--curve", "run=curve.csv"], "ho-co report: error: --curve needs --png OUT.png"),
    (["report", "--eval", "no-label"], "ho-co report: error: expected LABEL=PATH, got 'no-label'"),
    (["checkpoint", "export", "missing.ckpt", "out.ckpt"], "ho-co checkpoint: error: "),
    (["make-data", "--problem", "tsp", "--num-loc", "1", "--size", "2", "--seed", "0", "--out", "x.npz"],
     "ho-co make-data: error: "),
])
def test_every_subcommand_ends_bad_input_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_solver_failure_is_one_line_but_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    import ho_co.routing.checkpoints
    import ho_co.solvers
    from ho_co.problems import generate_tsp, save_instances

    inst = save_instances(tmp_path / "t.npz", locs=generate_tsp(5, 2, seed=0))

    def solver_fails(*args, **kwargs):
        raise RuntimeError("exact failed on instance 1: no tour")

    monkeypatch.setattr(ho_co.solvers, "solve_instances", solver_fails)
    assert main(["solve", "--solver", "exact", "--instances", str(inst), "--out", str(tmp_path / "r.npz")]) == 2
    assert capsys.readouterr().err == "ho-co solve: error: exact failed on instance 1: no tour\n"

    def bug(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(ho_co.routing.checkpoints, "export_weights", bug)
    with pytest.raises(RuntimeError, match="a bug, not bad input"):
        main(["checkpoint", "export", str(inst), str(tmp_path / "out.ckpt")])
