"""Invariant checks to asset check results: the one way an asset turns its offending rows into verdicts.

An invariant is a pure predicate in `transform/` (or a SQL test in `warehouse/sql_models.py`) that returns the
rows breaking it, empty when it holds. Assets with blocking checks compute every predicate before writing, then
`results = yield from blocking_checks(...)`: when all hold nothing is yielded yet and the passed results come back
to go on the MaterializeResult; when one fails, every result is yielded and the run fails with nothing written.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping

import dagster as dg
import polars as pl

from segflow_pipeline.defs.reporting import failure_metadata


def check_result(bad: pl.DataFrame, *, check_name: str | None = None, asset_key: dg.AssetKey | None = None,
                 metadata: Mapping[str, object] | None = None) -> dg.AssetCheckResult:
    """Passed when `bad` has no rows; otherwise failed, with the count and first offending rows."""
    return dg.AssetCheckResult(asset_key=asset_key, check_name=check_name, passed=bad.height == 0,
                               metadata=failure_metadata(bad) if bad.height else {"failing_rows": 0,
                                                                                   **(metadata or {})})


def blocking_checks(failures: Mapping[str, pl.DataFrame], subject: str, *, asset_key: dg.AssetKey | None = None,
                    reason: str | None = None, unchanged: str = "the published table is unchanged"
                    ) -> Generator[dg.AssetCheckResult, None, list[dg.AssetCheckResult]]:
    """One result per check (name -> offending rows). All pass: yields nothing, returns the results. Any fails:
    yields every result, then raises dg.Failure saying `subject` fails them (or `reason`) and nothing was written."""
    results = [check_result(bad, check_name=name, asset_key=asset_key) for name, bad in failures.items()]
    failed = [name for name, bad in failures.items() if bad.height]
    if not failed:
        return results
    yield from results
    raise dg.Failure(f"{subject} {reason or 'fails ' + ', '.join(failed)}; nothing was written and {unchanged}. "
                     "See the check results for the offending rows.")
