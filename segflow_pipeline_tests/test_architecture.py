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
    assert "Contracts: 9 kept, 0 broken." in " ".join(out.stdout.split()), out.stdout


# One new import per contract, each against a rule it must catch (so no contract is one that cannot fail).
BREAKS = [
    ("segflow_pipeline/transform/currency.py", "import dagster as dg",
     "Pure packages, the charts and the emulator never import Dagster"),
    ("segflow_pipeline/warehouse/files.py", "import dagster_duckdb",
     "Pure packages, the charts and the emulator never import Dagster"),
    ("stripe_sandbox/listing.py", "import dagster as dg",
     "Pure packages, the charts and the emulator never import Dagster"),
    ("segflow_pipeline/transform/money.py", "import duckdb", "transform does no I/O: it never imports DuckDB"),
    ("segflow_pipeline/stripe_api/crawler.py", "import duckdb",
     "stripe_api knows Stripe only: it hands rows to a sink and never imports DuckDB"),
    ("segflow_pipeline/raw_tables.py", "from segflow_pipeline import config",
     "Imports point one way: cli -> runner -> defs -> resources -> pure packages"),
    ("segflow_pipeline/resources/stripe.py", "from segflow_pipeline.defs import clock",
     "Imports point one way: cli -> runner -> defs -> resources -> pure packages"),
    ("segflow_pipeline/transform/live.py", "from segflow_pipeline.stripe_api import keys",
     "transform takes plain frames: it never imports stripe_api"),
    # every warehouse module imports DuckDB, so transform importing warehouse breaks the no-DuckDB contract too
    ("segflow_pipeline/transform/daily.py", "from segflow_pipeline.warehouse import tables",
     "transform owns its input schema: warehouse may import it, transform never imports warehouse",
     "transform does no I/O: it never imports DuckDB"),
    # warehouse/ is DuckDB I/O: stripe_api importing it also reaches DuckDB, which the next contract catches too.
    ("segflow_pipeline/stripe_api/keys.py", "from segflow_pipeline.warehouse import files",
     "stripe_api and warehouse do not import each other",
     "stripe_api knows Stripe only: it hands rows to a sink and never imports DuckDB"),
    ("segflow_pipeline/warehouse/raw.py", "from segflow_pipeline.stripe_api import errors",
     "stripe_api and warehouse do not import each other"),
    ("stripe_sandbox/listing.py", "from segflow_pipeline import config",
     "The Stripe emulator (stripe_sandbox) imports nothing of segflow_pipeline"),
    ("segflow_pipeline/runner.py", "from stripe_sandbox.server import EmulatorServer",
     "The pipeline reaches the emulator over HTTP: only the CLI imports stripe_sandbox, to start it"),
]


@pytest.mark.parametrize(("module", "line", "contracts"), [(m, line, c) for m, line, *c in BREAKS],
                         ids=[f"{m}:{line}" for m, line, *_ in BREAKS])
def test_a_new_forbidden_import_breaks_its_contract(tmp_path, module, line, contracts):
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in ("segflow_pipeline", "stripe_sandbox"):  # the two root packages of the contracts
        shutil.copytree(PROJECT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.csv"))
    assert lint_imports(tmp_path).returncode == 0  # the copy is clean before the new import
    with open(tmp_path / module, "a") as f:
        f.write(f"\n{line}\n")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    report = " ".join(out.stdout.split())  # long lines may be wrapped
    for contract in contracts:
        assert f"{contract} BROKEN" in report, out.stdout
    assert f"Contracts: {9 - len(contracts)} kept, {len(contracts)} broken." in report, out.stdout

