"""The architecture of DESIGN.md, checked on the source tree: layering, one hook adapter, one
forward path, module size, and the shared options on every command."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "circuits", "probes")


def modules(*packages):
    for pkg in packages:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            if "checkpoints" not in p.parts:
                yield p


def imported(path: Path) -> set[str]:
    """Every module name an import statement in `path` names (at any depth)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_interp_never_imports_circuits_or_probes():
    bad = {str(p.relative_to(ROOT)): sorted(n for n in imported(p)
                                             if n.split(".")[0] in ("circuits", "probes"))
           for p in modules("interp")}
    assert not {k: v for k, v in bad.items() if v}
    # the `interp` dispatcher names the circuits commands as strings and imports them on use
    code = ("import importlib, pkgutil, sys, interp\n"
            "for m in pkgutil.walk_packages(interp.__path__, 'interp.'):\n"
            "    if not m.name.endswith('__main__') and '.checkpoints' not in m.name:\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('circuits', 'probes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_tasks_know_nothing_of_models_and_models_nothing_of_analyses():
    for p in modules("interp"):
        rel = p.relative_to(ROOT).as_posix()
        names = imported(p)
        if rel.startswith("interp/tasks/"):
            assert not {n for n in names if n.startswith(("interp.models", "interp.attention",
                                                          "interp.cache", "interp.hooks"))}, rel
        if rel.startswith("interp/models/"):
            assert not {n for n in names if n.startswith(("interp.attention", "interp.cache",
                                                          "interp.viz"))}, rel


HOOK_STRING = re.compile(r"""["'](?:blocks|encoder_blocks|decoder_blocks)\.\{?\w*\}?\.""")


@pytest.mark.parametrize("path", [p for p in modules(*PACKAGES) if p.name != "hooks.py"],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hook_names_and_forward_passes_go_through_interp_hooks(path):
    """Outside interp/hooks.py no hook name is spelled by hand, no TransformerLens hook
    context or torch hook is opened, and no training flag is saved and restored."""
    src = path.read_text()
    body = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith("#"))
    assert not HOOK_STRING.search(body), "spell hook names with interp.hooks.hook_name"
    assert ".hooks(fwd_hooks" not in body and "run_with_hooks(" not in body, \
        "run models with interp.hooks.run"
    assert "register_forward_hook(" not in body and "register_forward_pre_hook(" not in body, \
        "pass module hooks to interp.hooks.run"
    assert not re.search(r"=\s*\w+\.training\b", body), "use interp.hooks.eval_mode"


def reason_given(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree) or ""
    first = doc.split("\n\n")[0].lower()
    return "400 lines" in first


@pytest.mark.parametrize("path", list(modules(*PACKAGES)) + sorted((ROOT / "scripts").glob("*.py")),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_is_over_400_lines_without_a_reason_in_its_docstring(path):
    n = len(path.read_text().splitlines())
    assert n <= 400 or reason_given(path), f"{n} lines and no reason in the docstring"


COMMANDS = ["interp.classify_heads", "circuits.ablate", "circuits.patch", "circuits.induction",
            "circuits.discover",
            "interp.evaluate", "interp.solve", "interp.train", "interp.train_text", "probes"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_takes_device_and_dtype(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-1000:]
    assert "--device" in out.stdout and "--dtype" in out.stdout


@pytest.mark.parametrize("package", ["interp", "circuits", "probes"])
def test_no_notebook_name_is_hidden_by_a_module_of_the_same_name(package):
    """`import interp.evaluate` sets the attribute `interp.evaluate` to the module: a public
    function of that name would vanish once any code imports the command."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    modules = {m.name.rsplit(".", 1)[-1] for m in pkgutil.iter_modules(pkg.__path__)}
    for name in set(pkg.__all__) & modules:
        # allowed only where the command module itself calls through to the function
        # (circuits.discover): then `circuits.discover(...)` works before and after
        # `import circuits.discover`
        function = getattr(pkg, name)
        mod = importlib.import_module(f"{package}.{name}")
        assert callable(mod) and getattr(pkg, name) is mod, name
        assert mod.__call__.__doc__ and function is not None
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
