"""The code keeps its shape: small modules, small signatures, an import graph in plain sight.

- No module over 450 lines.
- No function over 12 parameters (Typer commands aside: each option is a parameter).
- No function-local import of a dw module, except in the command line (``dwcli/cli/``),
  which loads each command's stages only when that command runs, so ``dw --help`` and
  shell completion answer at once.  Function-local imports of heavy libraries (torch,
  transformers, onnxruntime, av...) stay where ``--help`` speed needs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dwcli"
MAX_MODULE_LINES = 450
MAX_PARAMETERS = 12
LAZY_BOUNDARY = PACKAGE / "cli"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _is_command(function: ast.FunctionDef) -> bool:
    """A Typer command or callback (``@app.command``, ``@distill_app.callback``...)."""
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "callback"):
            return True
    return False


def _dw_imports(function: ast.FunctionDef) -> list[str]:
    found = []
    for node in ast.walk(function):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("dwcli")):
            found.append(f"{'.' * node.level}{node.module or ''}")
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("dwcli")]
    return found


def test_no_module_is_over_450_lines():
    long = {str(path.relative_to(PACKAGE)): count for path in _modules()
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules: {long}"


def test_no_function_takes_over_12_parameters():
    wide = []
    for path in _modules():
        for function in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            arguments = function.args
            count = len(arguments.posonlyargs + arguments.args + arguments.kwonlyargs)
            count -= bool(arguments.args) and arguments.args[0].arg in ("self", "cls")
            if count > MAX_PARAMETERS and not _is_command(function):
                wide.append(f"{path.relative_to(PACKAGE)}:{function.lineno} {function.name} ({count})")
    assert not wide, f"group these parameters into a dataclass: {wide}"


def test_dw_modules_are_imported_at_the_top_outside_the_command_line():
    hidden = []
    for path in _modules():
        if path.is_relative_to(LAZY_BOUNDARY):
            continue
        for function in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            hidden += [f"{path.relative_to(PACKAGE)}:{function.lineno} {function.name}: {name}"
                       for name in _dw_imports(function)]
    assert not hidden, f"import these at the top of the module: {hidden}"
