"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    head = text.split("## ", 1)[0] + text.split("## ", 2)[1]
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", head, re.S)


def test_readme_opens_with_exactly_two_setup_commands_that_pin_torch_first():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    for cmd in cmds:
        assert "\n" not in cmd.strip()
        assert cmd.index("torch==2.13.0") < cmd.index("pip install -q -c constraints.txt -e")
    assert cmds[0].endswith("python -m interp.classify_heads") and "pytest" in cmds[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == readme_commands()[1].strip()


def test_the_lock_pins_every_dependency_within_pyproject_ranges():
    """constraints.txt pins each direct dependency (runtime and test) to one version that
    pyproject's range admits, and names each package once."""
    import tomllib

    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            key = name.lower().replace("_", "-")
            assert key not in pins, f"{name} pinned twice"
            pins[key] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for ds in project["optional-dependencies"].values()
                                      for d in ds]
    for dep in map(Requirement, deps):
        key = dep.name.lower().replace("_", "-")
        assert key in pins, f"{dep.name} is not in the lock"
        assert dep.specifier.contains(pins[key]), f"{dep.name}=={pins[key]} outside {dep}"
