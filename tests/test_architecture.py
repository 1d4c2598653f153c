"""The module map stays true (ARCHITECTURE.md) and modules stay short; one home per formula."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "bayes_sd"
MAX_LINES = 600


def _modules() -> set[str]:
    """Modules of the package as the map names them (``io/`` stands for the readers)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("bayes_sd/io/"):
            names.add("bayes_sd/io/")
        elif path.name not in ("__init__.py", "_version.py"):
            names.add(rel)
    return names


def test_every_module_is_in_the_architecture_map():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    mapped = set(re.findall(r"^\| `(bayes_sd/[^`]*)` \|", text, flags=re.M))
    assert _modules() - mapped == set(), "modules missing from ARCHITECTURE.md"
    assert mapped - _modules() == set(), "ARCHITECTURE.md names modules that do not exist"


def test_no_module_is_over_600_lines():
    long = {
        p.relative_to(ROOT).as_posix(): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_demand_formula_has_one_numpy_pytensor_home():
    """``c1v + sd * c1s + k * c1d`` (the per-cycle demand) is written in latency.py and in the
    numba kernel only; everything else calls latency.cycle_terms / demand."""
    pattern = re.compile(r"c1v[\]\"']*\s*\+\s*\w+\s*\*\s*[\w.\[\"']*c1s|u\[2\] \+ sd \* u\[4\]")
    homes = {
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob("*.py")
        if pattern.search(p.read_text())
    }
    assert homes <= {"bayes_sd/latency.py", "bayes_sd/_kernels.py"}, homes
