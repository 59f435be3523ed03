"""SQL models of `dbt_like_sql/<schema>/<table>.sql`: parsing, the tables they read, their declared tests, running them.

Belongs here: turning a model file into a `SqlModel` (description, table references found with sqlglot, test
declarations), checking references against the tables that exist, ordering models, rendering the SQL that runs a
model for one integration and the SQL of its tests, and running both on a DuckDB connection. Not here: Dagster
(`defs/marts/` wires models into assets) or writing tables (`tables.replace_rows`).

A model file:
```sql
-- One line that becomes the asset description (and the table's COMMENT in the published file).
-- @col month: first day of the calendar month (UTC).
-- @col mrr: MRR at the end of the month.
-- test: unique(integration, currency, month)
-- test: not_null(integration, currency, month, mrr)
-- test: expression(starting_mrr + new_mrr - churned_mrr = ending_mrr) as movements_reconcile
-- test: query(
--     select m.* from this as m join marts.mrr_monthly as o using (integration, currency, month)
--     where m.ending_mrr <> o.mrr
-- ) as agrees_with_mrr_monthly
-- @col month: first day of the calendar month (UTC).
with monthly as (select ... from metrics.mrr_daily ...)
select ... from monthly
```
- Exactly one `select` statement (CTEs welcome). Every table it reads is schema-qualified (`metrics.mrr_daily`,
  `stripe.subscriptions`, `marts.mrr_monthly`); unqualified names must be CTEs.
- Parameters: `$as_of` (the run's time, naive UTC TIMESTAMP) for "now"; `$integration` is bound too but is rarely
  needed, as every read is already restricted to the integration being refreshed (see `scoped_sql`).
- Column comments, one per `-- @col <column>: <meaning>` line, become the columns' COMMENTs in the published file
  (`warehouse/comments.py`); a column the select does not produce is refused. Every column needs one.
- Tests, one per `-- test:` comment line, each a property every row of the result must have:
  `unique(col, ...)` (no two rows share these values), `not_null(col, ...)` (none of these is null),
  `expression(<sql boolean>) as <name>` (true for every row; null counts as false), and
  `query(<select>) as <name>`: a select returning the offending rows, in which `this` is the model's result and
  other tables are read as the model reads them (schema-qualified, restricted to the integration), for properties
  that compare the result with another table. A test whose parentheses are still open at the end of its line
  continues on the following comment lines. `as <name>` sets the check name (required for `expression` and
  `query`); the default is `unique_<cols>`, and `not_null_<col>` for one column or `not_null` for several.
- Other comment lines are free text for people, e.g. one `-- @col <name>: <description>` line per column of the
  result (the column comments of the published table).
- A model's dependencies are the tables its select and its `query` tests read.
"""

from __future__ import annotations

import datetime as dt
import graphlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl
import pyarrow as pa
import sqlglot
from sqlglot import exp

DIALECT = "duckdb"
MODELS_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"
PARAMETERS = ("integration", "as_of")
TEST_KINDS = ("unique", "not_null", "expression", "query")
THIS = "this"  # in a `query` test, the model's result
# Table functions that only generate rows (no file or network access) may appear in FROM.
ROW_GENERATORS = (exp.GenerateSeries, exp.Unnest, exp.ExplodingGenerateSeries)
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_TEST_PREFIX = "test:"
_COL_PREFIX = "@col "


class ModelError(ValueError):
    """A model file cannot be used; the message names the file and what to change."""


@dataclass(frozen=True, order=True)
class TableRef:
    """A schema-qualified table a model reads."""

    schema: str
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class DataTest:
    """A property every row of a model's result must have; `name` is the check name."""

    name: str
    kind: Literal["unique", "not_null", "expression", "query"]
    columns: tuple[str, ...] = ()
    condition: str | None = None  # expression: the SQL boolean; query: the select returning offending rows


@dataclass(frozen=True)
class SqlModel:
    """One model file: the table it builds (`schema.name`), what it reads and what its rows must satisfy."""

    schema: str
    name: str
    sql: str
    description: str
    refs: tuple[TableRef, ...]
    tests: tuple[DataTest, ...]
    path: Path | None = None
    columns: tuple[str, ...] = ()  # the result's columns, as far as the select names them
    column_comments: tuple[tuple[str, str], ...] = ()  # (column, meaning) from `-- @col` lines

    @property
    def ref(self) -> TableRef:
        return TableRef(self.schema, self.name)

    @property
    def where(self) -> str:
        return str(self.path) if self.path else f"{self.schema}/{self.name}.sql"


def load_models(root: Path = MODELS_DIR, schema: str = "marts") -> list[SqlModel]:
    """Every `<root>/<schema>/*.sql`, parsed, in dependency order (a model after the models it reads)."""
    folder = root / schema
    paths = sorted(folder.glob("*.sql"))
    if not paths:
        raise ModelError(f"no SQL models in {folder}: add `{schema}/<table>.sql` files or fix the path")
    return in_dependency_order([parse_model(p.read_text(), schema, p.stem, path=p) for p in paths])


def parse_model(text: str, schema: str, name: str, path: Path | None = None) -> SqlModel:
    """Parse one model file's text; raises `ModelError` naming the file when it breaks the rules above."""
    where = str(path) if path else f"{schema}/{name}.sql"
    if not _NAME.match(name):
        raise ModelError(f"{where}: the file name must be a lowercase snake_case table name")
    description = _description(text, where)
    statements = [s for s in _parse_all(text, where) if s is not None]
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(f"{where}: a model is exactly one select statement (found {len(statements)} statements)")
    tree = statements[0]
    _check_parameters(tree, where)
    columns = tuple(tree.named_selects)
    comments = column_comments(text, where)
    unknown = [c for c, _ in comments if c not in columns]
    if unknown and "*" not in columns:
        raise ModelError(f"{where}: `-- @col` names column(s) the select does not produce: {', '.join(unknown)}")
    tests = test_declarations(text, where)
    refs = set(_table_refs(tree, where))
    for test in tests:
        if test.kind == "query":
            refs.update(_table_refs(_parse_one(test.condition or "", where), where, allowed=frozenset({THIS})))
    return SqlModel(schema=schema, name=name, sql=text, description=description,
                    refs=tuple(sorted(refs)), tests=tests, path=path,
                    columns=columns, column_comments=comments)


def column_comments(text: str, where: str = "<sql>") -> tuple[tuple[str, str], ...]:
    """The `-- @col <column>: <meaning>` lines of a model file, in order."""
    found: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        body = stripped.lstrip("-").strip() if stripped.startswith("--") else ""
        if not body.startswith(_COL_PREFIX):
            continue
        column, sep, meaning = body[len(_COL_PREFIX):].partition(":")
        column, meaning = column.strip(), meaning.strip()
        if not sep or not _NAME.match(column) or not meaning:
            raise ModelError(f"{where}:{number}: write `-- @col <column>: <what it means>`, not `{stripped}`")
        found.append((column, meaning))
    names = [c for c, _ in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelError(f"{where}: `-- @col` describes {', '.join(duplicates)} twice")
    return tuple(found)


def table_refs(sql: str) -> tuple[TableRef, ...]:
    """The schema-qualified tables a select reads (CTE names excluded), sorted and without duplicates."""
    return _table_refs(_parse_one(sql, "<sql>"), "<sql>")


def check_refs(models: Iterable[SqlModel], known: Iterable[TableRef]) -> None:
    """Raise `ModelError` if a model reads a table that is neither in `known` nor another model."""
    models = list(models)
    available = set(known) | {m.ref for m in models}
    for model in models:
        unknown = [r for r in model.refs if r not in available]
        if unknown:
            names = ", ".join(str(r) for r in unknown)
            choices = ", ".join(str(r) for r in sorted(available))
            raise ModelError(f"{model.where} reads unknown table(s) {names}. Models may read: {choices}. "
                             "Fix the name, or add the table's asset first.")


def in_dependency_order(models: Iterable[SqlModel]) -> list[SqlModel]:
    """Models sorted so each comes after the models it reads; a cycle raises `ModelError`."""
    by_ref = {m.ref: m for m in sorted(models, key=lambda m: m.ref)}
    graph = {ref: {r for r in m.refs if r in by_ref} for ref, m in by_ref.items()}
    try:
        return [by_ref[ref] for ref in graphlib.TopologicalSorter(graph).static_order()]
    except graphlib.CycleError as exc:
        cycle = " -> ".join(str(r) for r in exc.args[1])
        raise ModelError(f"SQL models read each other in a cycle: {cycle}. Break the cycle.") from None


def test_declarations(text: str, where: str = "<sql>") -> tuple[DataTest, ...]:
    """The `-- test: kind(args) [as name]` comments of a model file (a test with open parentheses at the end of
    its line continues on the following comment lines)."""
    tests: list[DataTest] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, stripped = index + 1, lines[index].strip()
        index += 1
        body = stripped.lstrip("-").strip()
        if not stripped.startswith("--") or not body.startswith(_TEST_PREFIX):
            continue
        while _open_parentheses(body) > 0 and index < len(lines) and lines[index].strip().startswith("--"):
            body = f"{body} {lines[index].strip().lstrip('-').strip()}"
            index += 1
        tests.append(_parse_test(body[len(_TEST_PREFIX):].strip(), f"{where}:{number}"))
    names = [t.name for t in tests]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelError(f"{where}: two tests are named {', '.join(duplicates)}; give one `as <other_name>`")
    return tuple(tests)


def scoped_sql(model: SqlModel, column: str = "integration") -> str:
    """The model's select with every table read replaced by that table's rows of `$integration` only.

    Each integration's working file is refreshed on its own and published as a union, so a model must never see
    (or write) another integration's rows, even if a file happens to hold some.
    """
    return _scoped(_parse_one(model.sql, model.where), column).sql(dialect=DIALECT)


def _scoped(tree: exp.Expression, column: str = "integration") -> exp.Expression:
    for table in list(tree.find_all(exp.Table)):
        if not table.db:
            continue
        alias = table.alias or table.name
        scoped = (exp.select("*").from_(exp.table_(table.name, db=table.db))
                  .where(exp.column(column).eq(exp.Placeholder(this="integration"))))
        table.replace(scoped.subquery(alias))
    return tree


def parameters_for(sql: str, integration: str, as_of: dt.datetime) -> dict[str, object]:
    """The bound parameters `sql` uses (DuckDB refuses unused ones)."""
    values: dict[str, object] = {"integration": integration, "as_of": as_of}
    used = {p.name for p in _parse_one(sql, "<sql>").find_all(exp.Placeholder)}
    return {name: values[name] for name in PARAMETERS if name in used}


def failing_rows_sql(test: DataTest, relation: str) -> str:
    """A select returning the rows of `relation` that break `test` (none when it holds)."""
    source = exp.to_table(relation)
    if test.kind == "unique":
        columns = [exp.column(c) for c in test.columns]
        query = (exp.select(*columns, exp.alias_(exp.Count(this=exp.Star()), "duplicate_rows"))
                 .from_(source).group_by(*columns).having(exp.Count(this=exp.Star()) > 1))
    elif test.kind == "not_null":
        query = exp.select("*").from_(source).where(exp.or_(*(exp.column(c).is_(exp.null()) for c in test.columns)))
    elif test.kind == "query":
        query = _parse_one(test.condition or "", test.name)
        for table in list(query.find_all(exp.Table)):
            if not table.db and table.name == THIS and isinstance(table.this, exp.Identifier):
                table.replace(exp.to_table(relation).as_(table.alias or THIS))
        query = _scoped(query)
    else:
        condition = sqlglot.parse_one(test.condition or "", dialect=DIALECT)
        query = exp.select("*").from_(source).where(
            exp.not_(exp.Coalesce(this=exp.paren(condition), expressions=[exp.false()])))
    return query.sql(dialect=DIALECT)


def run_model(con: duckdb.DuckDBPyConnection, model: SqlModel, integration: str, as_of: dt.datetime) -> pa.Table:
    """The model's rows for one integration, computed on `con` (nothing is written)."""
    sql = scoped_sql(model)
    try:
        return con.sql(sql, params=parameters_for(sql, integration, as_of)).to_arrow_table()
    except duckdb.CatalogException as exc:
        raise ModelError(f"{model.where} cannot run: {exc}. Materialize the tables it reads "
                         f"({', '.join(str(r) for r in model.refs)}) first.") from exc


def test_failures(con: duckdb.DuckDBPyConnection, model: SqlModel, rows: pa.Table, integration: str,
                  as_of: dt.datetime | None = None) -> dict[str, pl.DataFrame]:
    """For each test of `model`, the rows of `rows` (the model's result for `integration`) that break it, or for a
    `query` test the rows it returns; empty frames when it holds."""
    relation = f"_model_{model.name}"
    con.register(relation, rows)
    try:
        failures = {}
        for test in model.tests:
            sql = failing_rows_sql(test, relation)
            params = parameters_for(sql, integration, as_of or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
            try:
                failures[test.name] = con.sql(sql, params=params).pl()
            except duckdb.Error as exc:
                raise ModelError(f"{model.where}: test {test.name} cannot run: {exc}") from exc
        return failures
    finally:
        con.unregister(relation)


def _description(text: str, where: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    description = first.lstrip("-").strip()
    if not first.startswith("--") or not description or description.startswith(_TEST_PREFIX):
        raise ModelError(f"{where}: the first line must be a `-- description` comment saying what the table holds")
    return description


def _parse_all(text: str, where: str) -> list[exp.Expression | None]:
    try:
        return sqlglot.parse(text, dialect=DIALECT)
    except sqlglot.errors.ParseError as exc:
        raise ModelError(f"{where}: not valid DuckDB SQL: {exc}") from None


def _parse_one(text: str, where: str) -> exp.Expression:
    statements = [s for s in _parse_all(text, where) if s is not None]
    if len(statements) != 1:
        raise ModelError(f"{where}: expected one statement, found {len(statements)}")
    return statements[0]


def _cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name for cte in tree.find_all(exp.CTE)}


def _table_refs(tree: exp.Expression, where: str, allowed: frozenset[str] = frozenset()) -> tuple[TableRef, ...]:
    ctes = _cte_names(tree) | allowed
    refs: set[TableRef] = set()
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            if isinstance(table.this, ROW_GENERATORS):
                continue
            raise ModelError(f"{where}: `{table.sql(dialect=DIALECT)}` is not a table; models read warehouse "
                             "tables only (no files, URLs or table functions)")
        if table.catalog:
            raise ModelError(f"{where}: `{table.sql(dialect=DIALECT)}` names a database; write `schema.table`")
        if not table.db:
            if table.name in ctes:
                continue
            raise ModelError(f"{where}: `{table.name}` is neither a CTE nor schema-qualified; write e.g. "
                             f"`metrics.{table.name}` or `marts.{table.name}`")
        refs.add(TableRef(table.db, table.name))
    return tuple(sorted(refs))


def _check_parameters(tree: exp.Expression, where: str) -> None:
    unknown = sorted({p.name for p in tree.find_all(exp.Placeholder)} - set(PARAMETERS))
    if unknown or any(p.name == "" for p in tree.find_all(exp.Placeholder)):
        raise ModelError(f"{where}: unknown parameter(s) {unknown or ['?']}; models may use "
                         + ", ".join(f"${p}" for p in PARAMETERS))


def _parse_test(body: str, where: str) -> DataTest:
    open_at, close_at = body.find("("), body.rfind(")")
    kind = body[:open_at].strip() if open_at > 0 else ""
    if kind not in TEST_KINDS or close_at < open_at:
        raise ModelError(f"{where}: cannot read test `{body}`; write `unique(col, ...)`, `not_null(col, ...)`, "
                         "`expression(<sql boolean>) as <name>` or `query(<select>) as <name>`")
    arguments, rest = body[open_at + 1:close_at].strip(), body[close_at + 1:].strip()
    name = ""
    if rest:
        words = rest.split()
        if len(words) != 2 or words[0].lower() != "as" or not _NAME.match(words[1]):
            raise ModelError(f"{where}: after the test write `as <snake_case_name>`, not `{rest}`")
        name = words[1]
    if kind == "query":
        if not name:
            raise ModelError(f"{where}: name the property a query test checks: `query(select ...) as <name>`")
        try:
            statements = [s for s in sqlglot.parse(arguments, dialect=DIALECT) if s is not None]
        except sqlglot.errors.ParseError as exc:
            raise ModelError(f"{where}: the query `{arguments}` is not valid SQL: {exc}") from None
        if len(statements) != 1 or not isinstance(statements[0], exp.Query):
            raise ModelError(f"{where}: a query test is one select returning the offending rows")
        _check_parameters(statements[0], where)
        _table_refs(statements[0], where, allowed=frozenset({THIS}))
        return DataTest(name=name, kind="query", condition=statements[0].sql(dialect=DIALECT))
    if kind == "expression":
        if not name:
            raise ModelError(f"{where}: name the property an expression test checks: `expression(...) as <name>`")
        try:
            condition = sqlglot.parse_one(arguments, dialect=DIALECT)
        except sqlglot.errors.ParseError as exc:
            raise ModelError(f"{where}: the expression `{arguments}` is not valid SQL: {exc}") from None
        return DataTest(name=name, kind="expression", condition=condition.sql(dialect=DIALECT))
    columns = _column_list(arguments, where)
    default = f"{kind}_{'_'.join(columns)}" if kind == "unique" or len(columns) == 1 else kind
    return DataTest(name=name or default, kind=kind, columns=columns)  # type: ignore[arg-type]


def _open_parentheses(text: str) -> int:
    """How many parentheses `text` leaves open, not counting those inside quotes."""
    bare = re.sub(r"'[^']*'|\"[^\"]*\"", "", text)
    return bare.count("(") - bare.count(")")


def _column_list(arguments: str, where: str) -> tuple[str, ...]:
    try:
        select = sqlglot.parse_one(f"select {arguments}", dialect=DIALECT)
    except sqlglot.errors.ParseError:
        select = None
    columns = select.expressions if isinstance(select, exp.Select) else []
    if not columns or not all(isinstance(c, exp.Column) and not c.table for c in columns):
        raise ModelError(f"{where}: list plain column names, e.g. `unique(integration, currency, month)`")
    return tuple(c.name for c in columns)


def known_tables(tables: Mapping[str, Iterable[str]]) -> set[TableRef]:
    """`{"stripe": ["subscriptions", ...]}` → the matching `TableRef`s."""
    return {TableRef(schema, table) for schema, names in tables.items() for table in names}
