"""The import rules hold: `lint-imports` checks the contracts in pyproject.toml ([tool.importlinter])."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], capture_output=True, text=True, cwd=root,
                          env=env, timeout=120)


def test_every_import_contract_is_kept():
    out = lint_imports(PROJECT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 7 kept, 0 broken." in " ".join(out.stdout.split()), out.stdout


# One new import per contract, each against a rule it must catch (so no contract is one that cannot fail), with
# the other contracts the same import breaks through its own imports (every warehouse module imports DuckDB).
BREAKS = [
    ("transform/currency.py", "import dagster as dg", "Pure packages, the charts and the emulator never import Dagster",
     ()),
    ("warehouse/files.py", "import dagster_duckdb", "Pure packages, the charts and the emulator never import Dagster",
     ()),
    ("transform/money.py", "import duckdb", "transform does no I/O: it never imports DuckDB", ()),
    ("resources/stripe.py", "from segflow_pipeline.defs import clock",
     "Imports point one way: cli -> runner -> defs -> resources -> pure packages", ()),
    ("transform/live.py", "from segflow_pipeline.stripe_api import keys",
     "transform takes plain frames: it never imports stripe_api", ()),
    ("transform/daily.py", "from segflow_pipeline.warehouse import tables",
     "transform owns its input schema: warehouse may import it, transform never imports warehouse",
     ("transform does no I/O: it never imports DuckDB",)),
    ("stripe_api/keys.py", "from segflow_pipeline.warehouse import files",
     "stripe_api and warehouse do not import each other", ()),
    ("sandbox/listing.py", "from segflow_pipeline import config",
     "The Stripe emulator (sandbox) imports nothing else of segflow_pipeline", ()),
]


@pytest.mark.parametrize(("module", "line", "contract", "also"), BREAKS,
                         ids=[f"{m}:{line}" for m, line, _, _ in BREAKS])
def test_a_new_forbidden_import_breaks_its_contract(tmp_path, module, line, contract, also):
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PROJECT / "segflow_pipeline", tmp_path / "segflow_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.csv"))
    assert lint_imports(tmp_path).returncode == 0  # the copy is clean before the new import
    with open(tmp_path / "segflow_pipeline" / module, "a") as f:
        f.write(f"\n{line}\n")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    report = " ".join(out.stdout.split())  # long lines may be wrapped
    for broken in (contract, *also):
        assert f"{broken} BROKEN" in report, out.stdout
    assert f"Contracts: {7 - 1 - len(also)} kept, {1 + len(also)} broken." in report, out.stdout
