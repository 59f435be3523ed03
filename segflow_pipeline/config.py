"""Settings from the environment and the integrations file, as frozen values. No Dagster, no side effects at import.

Environment: STRIPE_API_KEY, STRIPE_API_BASE, SEGFLOW_DUCKDB_PATH; project-specific variables start with SEGFLOW_.
The integrations file names, for each Stripe account, the environment variable that holds its key, never the key
itself. SEGFLOW_AS_OF sets the moment a run treats as "now" (default: the real time), so a run can be repeated as
of any instant, e.g. against a sandbox account built at that instant. A reporting currency is optional:
SEGFLOW_FX_RATES names a CSV file of rates (`date,currency,rate`) and SEGFLOW_REPORTING_CURRENCY the currency they
convert into.

One bad entry of the integrations file fails its own account only: an entry with a usable name becomes an
`Integration` carrying the `problem` (file, line, fix), whose runs fail with it; an entry without one is listed by
`read_integrations` so that `segflow refresh` reports it. The other accounts load and run. Names of accounts and of
key variables follow one rule each (`check_name`, `check_key_env`), for the file and for `segflow integrations add`.

Every setting is read here and nowhere else: `settings()` resolves them all at once into a frozen `Settings`
(what the Dagster code location binds when its Definitions are built: resources, schedule, integrations), and the
functions below resolve one each, from the environment or a mapping given for tests. Nothing is read at import.

Workspaces: each entry may name a `workspace` (default `default`); each workspace publishes its own file, which
holds its own accounts' data and nobody else's. `default` publishes to SEGFLOW_DUCKDB_PATH; another workspace W to
SEGFLOW_WORKSPACE_PATH_TEMPLATE with `{workspace}` replaced by W (default
`<directory of SEGFLOW_DUCKDB_PATH>/workspaces/{workspace}/segflow.duckdb`), see `workspace_path`. Workspace names
follow the rule of account names (`check_workspace`), so a name never leaves its directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

DEFAULT_DUCKDB_PATH = "data/segflow.duckdb"
DEFAULT_INTEGRATIONS_FILE = "integrations.yaml"
DEFAULT_BETS_FILE = "bets.yaml"
DEFAULT_INTEGRATION = "default"
DEFAULT_WORKSPACE = "default"
WORKSPACE_PATH_TEMPLATE_ENV = "SEGFLOW_WORKSPACE_PATH_TEMPLATE"
WORKSPACE_PLACEHOLDER = "{workspace}"
AS_OF_ENV = "SEGFLOW_AS_OF"
FX_RATES_ENV = "SEGFLOW_FX_RATES"
REPORTING_CURRENCY_ENV = "SEGFLOW_REPORTING_CURRENCY"
DEFAULT_REPORTING_CURRENCY = "usd"
DUCKDB_PATH_ENV = "SEGFLOW_DUCKDB_PATH"
API_KEY_ENV = "STRIPE_API_KEY"
API_BASE_ENV = "STRIPE_API_BASE"
INTEGRATIONS_FILE_ENV = "SEGFLOW_INTEGRATIONS_FILE"
BETS_FILE_ENV = "SEGFLOW_BETS_FILE"
MEMORY_LIMIT_ENV = "SEGFLOW_DUCKDB_MEMORY_LIMIT"
REFRESH_CRON_ENV = "SEGFLOW_REFRESH_CRON"
REFRESH_TIMEZONE_ENV = "SEGFLOW_REFRESH_TIMEZONE"
DEFAULT_REFRESH_CRON = "0 6 * * *"
DEFAULT_REFRESH_TIMEZONE = "UTC"
DAGSTER_HOME_ENV = "DAGSTER_HOME"
# Illustrative usd rates for eur and jpy, one a month from 2000 to 2040, so that the demo on the sandbox (which can be
# built at any date) shows a reporting currency. Never used unless the demo runs on the sandbox.
SANDBOX_FX_RATES = Path(__file__).resolve().parents[1] / "stripe_sandbox" / "fx_rates.csv"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Environment variable names as shells and the pipeline's own variables write them.
KEY_ENV_PATTERN = re.compile(r"[A-Z_][A-Z0-9_]*")


class ConfigError(ValueError):
    """The configuration is wrong; the message says where and how to fix it."""


@dataclass(frozen=True)
class MrrOptions:
    """MRR options (docs/mrr.md): when a scheduled cancellation stops counting, and which discounts reduce MRR."""

    churn_recognition: Literal["canceled_at", "period_end"] = "canceled_at"
    discounts: Literal["forever", "all", "none"] = "forever"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "options") -> "MrrOptions":
        raw = dict(raw or {})
        unknown = set(raw) - {"churn_recognition", "discounts"}
        if unknown:
            raise ConfigError(f"{where}: unknown MRR option(s) {sorted(unknown)}; known: churn_recognition, discounts")
        opts = cls(**raw)
        if opts.churn_recognition not in ("canceled_at", "period_end"):
            raise ConfigError(f"{where}: churn_recognition must be canceled_at or period_end")
        if opts.discounts not in ("forever", "all", "none"):
            raise ConfigError(f"{where}: discounts must be forever, all or none")
        return opts


@dataclass(frozen=True)
class Integration:
    """One connected Stripe account. `problem`: why its entry in the integrations file cannot be used (the file,
    the line and the fix); the account's runs fail with it, the others run."""

    name: str
    key_env: str = API_KEY_ENV
    api_base: str | None = None
    options: MrrOptions = field(default_factory=MrrOptions)
    problem: str | None = None
    # The workspace whose published file holds this account's data. Empty only for an entry whose workspace is
    # refused (its `problem` says why): such an account is published in no workspace.
    workspace: str = DEFAULT_WORKSPACE

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        return secret(self.key_env, environ)


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return environ if environ is not None else os.environ


def secret(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """The key held by the environment variable `variable` ('' when unset). Read when a reader is built, never kept
    in settings, resource config or anything Dagster stores."""
    return _env(environ).get(variable, "")


def text(variable: str, environ: Mapping[str, str] | None = None) -> str:
    """An environment variable's value as written ('' when unset), for messages that quote it."""
    return _env(environ).get(variable, "")


def is_set(variable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment variable is set to a non-empty value."""
    return bool((_env(environ).get(variable) or "").strip())


def duckdb_path(environ: Mapping[str, str] | None = None) -> Path:
    return Path(_env(environ).get(DUCKDB_PATH_ENV) or DEFAULT_DUCKDB_PATH)


def duckdb_memory_limit(environ: Mapping[str, str] | None = None) -> str | None:
    """SEGFLOW_DUCKDB_MEMORY_LIMIT (e.g. `1GB`), or None for the warehouse's default."""
    return (_env(environ).get(MEMORY_LIMIT_ENV) or "").strip() or None


def refresh_cron(environ: Mapping[str, str] | None = None) -> str:
    return _env(environ).get(REFRESH_CRON_ENV, DEFAULT_REFRESH_CRON)


def refresh_timezone(environ: Mapping[str, str] | None = None) -> str:
    return _env(environ).get(REFRESH_TIMEZONE_ENV, DEFAULT_REFRESH_TIMEZONE)


def dagster_home(environ: Mapping[str, str] | None = None) -> str | None:
    """DAGSTER_HOME as set (the Dagster instance's folder), or None."""
    return _env(environ).get(DAGSTER_HOME_ENV) or None


def workspace_path(workspace: str, environ: Mapping[str, str] | None = None, *,
                   published: Path | None = None) -> Path:
    """The file a workspace publishes to. `default`: SEGFLOW_DUCKDB_PATH (or `published`, the default workspace's
    file when the caller already knows it). Any other workspace W: SEGFLOW_WORKSPACE_PATH_TEMPLATE with
    `{workspace}` replaced by W, by default `<directory of the default file>/workspaces/{workspace}/segflow.duckdb`.

    The result must lie inside the template's base directory (the part before `{workspace}`) and differ from the
    default workspace's file; `ConfigError` otherwise, as for a name that breaks `check_workspace`."""
    env = _env(environ)
    default = published if published is not None else duckdb_path(env)
    if workspace == DEFAULT_WORKSPACE:
        return default
    check_workspace(workspace)
    template = (env.get(WORKSPACE_PATH_TEMPLATE_ENV) or "").strip()
    if not template:
        template = str(default.parent / "workspaces" / WORKSPACE_PLACEHOLDER / "segflow.duckdb")
    if WORKSPACE_PLACEHOLDER not in template:
        raise ConfigError(f"{WORKSPACE_PATH_TEMPLATE_ENV}={template!r} does not contain {WORKSPACE_PLACEHOLDER}: "
                          "every workspace would publish to one file; write e.g. "
                          "/srv/segflow/workspaces/{workspace}/segflow.duckdb")
    prefix = template.split(WORKSPACE_PLACEHOLDER, 1)[0]
    base = Path(prefix) if prefix.endswith(("/", os.sep)) or not prefix else Path(prefix).parent
    base = base.resolve()
    path = Path(template.replace(WORKSPACE_PLACEHOLDER, workspace))
    resolved = path.resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise ConfigError(f"workspace {workspace!r}: its file {resolved} would lie outside {base}, the directory "
                          f"of {WORKSPACE_PATH_TEMPLATE_ENV}; fix the template or the workspace name")
    if resolved == default.resolve():
        raise ConfigError(f"workspace {workspace!r}: its file {resolved} is the default workspace's file "
                          f"(SEGFLOW_DUCKDB_PATH); change {WORKSPACE_PATH_TEMPLATE_ENV} or the workspace name")
    return path


def parse_instant(text: str, where: str = AS_OF_ENV) -> dt.datetime:
    """An ISO 8601 instant (`2028-02-29T00:00:05Z`, `2026-12-06T08:00:00+01:00`, `2026-12-06`) as naive UTC;
    without an offset it is read as UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{where}={text!r} is not an ISO 8601 instant; write e.g. 2028-02-29T00:00:05Z") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def as_of(environ: Mapping[str, str] | None = None) -> dt.datetime | None:
    """The moment set by SEGFLOW_AS_OF as naive UTC, or None when unset (a run then uses the time it started)."""
    env = _env(environ)
    text = env.get(AS_OF_ENV, "").strip()
    return parse_instant(text) if text else None


def api_base(environ: Mapping[str, str] | None = None) -> str | None:
    env = _env(environ)
    return env.get(API_BASE_ENV) or None


def integrations_file(environ: Mapping[str, str] | None = None) -> Path:
    env = _env(environ)
    return Path(env.get(INTEGRATIONS_FILE_ENV) or DEFAULT_INTEGRATIONS_FILE)


@dataclass(frozen=True)
class ReportingCurrency:
    """Convert every currency into `currency` with the rates of `rates_file` (units of `currency` per unit)."""

    currency: str
    rates_file: Path


def reporting_currency(environ: Mapping[str, str] | None = None) -> ReportingCurrency | None:
    """The reporting currency settings, or None when SEGFLOW_FX_RATES is not set (nothing is converted then)."""
    env = _env(environ)
    rates = (env.get(FX_RATES_ENV) or "").strip()
    if not rates:
        return None
    currency = (env.get(REPORTING_CURRENCY_ENV) or DEFAULT_REPORTING_CURRENCY).strip().lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise ConfigError(f"{REPORTING_CURRENCY_ENV}={currency!r} is not a currency code; set a three-letter ISO "
                          "code such as usd or eur")
    path = Path(rates)
    if not path.is_file():
        raise ConfigError(f"{FX_RATES_ENV}={rates}: no such file. Point it at a CSV file with the columns "
                          f"date,currency,rate ({currency} per unit of currency), or unset it.")
    return ReportingCurrency(currency=currency, rates_file=path)


@contextlib.contextmanager
def sandbox_fx_rates(environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """For the demo on the sandbox: the sandbox's usd rates as SEGFLOW_FX_RATES for the life of the block, unless
    the user set SEGFLOW_FX_RATES or a reporting currency other than usd themselves (their settings win)."""
    env = _env(environ)
    chosen = (env.get(REPORTING_CURRENCY_ENV) or DEFAULT_REPORTING_CURRENCY).strip().lower()
    if env.get(FX_RATES_ENV) or chosen != DEFAULT_REPORTING_CURRENCY:
        yield
        return
    with environment({FX_RATES_ENV: str(SANDBOX_FX_RATES), REPORTING_CURRENCY_ENV: DEFAULT_REPORTING_CURRENCY},
                     env):
        yield


def bets_file(environ: Mapping[str, str] | None = None) -> Path:
    """The bets file (`bets.py`): SEGFLOW_BETS_FILE, default `bets.yaml` in the working directory."""
    env = _env(environ)
    return Path(env.get(BETS_FILE_ENV) or DEFAULT_BETS_FILE)


def check_name(name: str, where: str = "integration name") -> None:
    """The rule for account names (they become partition keys, file names and check names)."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ConfigError(f"{where} {name!r} must be 1-63 lowercase letters, digits, '_' or '-', starting with a "
                          "letter or digit")


def check_workspace(name: object, where: str = "workspace") -> None:
    """The rule for workspace names: that of account names, since a workspace name becomes a directory name (no
    '/', '..', leading dot, capitals or letters outside a-z); the message suggests a name that follows it."""
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        return
    text = name if isinstance(name, str) else str(name)
    fix = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63] or "acme"
    raise ConfigError(f"{where} {text!r} is refused: a workspace name is 1-63 lowercase letters (a-z), digits, "
                      "'_' or '-', starting with a letter or digit (no '/', '..', leading dot or accented letters), "
                      f"e.g. workspace: {fix}")


def check_key_env(name: str, where: str = "key_env") -> None:
    """The rule for the name of the environment variable that holds a key, for the file and for `integrations add`."""
    if not KEY_ENV_PATTERN.fullmatch(name or ""):
        fix = re.sub(r"[^A-Z0-9_]", "_", (name or "").upper()) or "STRIPE_API_KEY_ACME"
        fix = fix if not fix[0].isdigit() else "_" + fix
        raise ConfigError(f"{where} {name!r} is not an environment variable name this project reads: use capital "
                          f"letters, digits and '_', not starting with a digit, e.g. {fix} (export {fix}=rk_live_…)")


def _entry_lines(text: str) -> list[int]:
    """The line (1-based) where each entry of the `integrations:` list starts, as far as YAML can tell."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if getattr(key, "value", None) == "integrations" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def _entry(entry: Any, where: str) -> Integration:
    """One entry of the file, or `ConfigError` saying what is wrong with it (the name, when usable, is checked
    first by the caller)."""
    if "key" in entry or "api_key" in entry:
        raise ConfigError(f"{where}: never put a key in this file; name its environment variable with key_env")
    key_env = str(entry.get("key_env") or "")
    check_key_env(key_env, f"{where}: key_env")
    api_base = entry.get("api_base")
    if api_base is not None and not isinstance(api_base, str):
        raise ConfigError(f"{where}: api_base must be a URL like https://api.stripe.com")
    if entry.get("options") is not None and not isinstance(entry.get("options"), dict):
        raise ConfigError(f"{where}: options must be a mapping, e.g. {{churn_recognition: period_end}}")
    workspace = entry.get("workspace", DEFAULT_WORKSPACE)
    check_workspace(workspace, f"{where}: workspace")
    return Integration(name=str(entry["name"]), key_env=key_env, api_base=api_base,
                       options=MrrOptions.from_mapping(entry.get("options"), f"{where}: options"),
                       workspace=workspace)


def read_integrations(environ: Mapping[str, str] | None = None) -> tuple[list[Integration], list[str]]:
    """The configured accounts, and the problems of entries that name no usable account.

    Without a file: one integration `default` reading STRIPE_API_KEY. A file that is not valid YAML, has no
    `integrations:` list or no usable entry at all raises `ConfigError`.
    """
    path = integrations_file(environ)
    if not path.exists():
        return [Integration(name=DEFAULT_INTEGRATION)], []
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix or delete the file") from None
    entries = raw.get("integrations") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a top-level 'integrations:' list with at least one account")
    lines = _entry_lines(text)
    result: list[Integration] = []
    unusable: list[str] = []
    for i, entry in enumerate(entries):
        where = f"{path}, line {lines[i]}" if i < len(lines) else f"{path}: integrations[{i}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        try:
            if not isinstance(entry, dict) or name is None:
                raise ConfigError(f"{where}: each integration needs a name and key_env, e.g. "
                                  "{name: acme, key_env: STRIPE_API_KEY_ACME}")
            check_name(str(name), f"{where}: name")
            if any(known.name == str(name) for known in result):
                raise ConfigError(f"{where}: a second integration named {name!r}; names must be unique")
        except ConfigError as exc:
            unusable.append(str(exc))
            continue
        try:
            result.append(_entry(entry, where))
        except ConfigError as exc:
            workspace = entry.get("workspace", DEFAULT_WORKSPACE)
            result.append(Integration(name=str(name), key_env=str(entry.get("key_env") or ""), problem=str(exc),
                                      workspace=workspace if isinstance(workspace, str)
                                      and NAME_PATTERN.fullmatch(workspace) else ""))
    if not result:
        raise ConfigError("; ".join(unusable))
    return result, unusable


def workspaces(integrations: list[Integration]) -> dict[str, list[Integration]]:
    """The accounts of each workspace, in the file's order (accounts whose workspace is refused are in none)."""
    result: dict[str, list[Integration]] = {}
    for i in integrations:
        if i.workspace:
            result.setdefault(i.workspace, []).append(i)
    return result


def load_integrations(environ: Mapping[str, str] | None = None) -> list[Integration]:
    """The configured accounts (see `read_integrations`); entries naming no usable account are left out."""
    return read_integrations(environ)[0]


def add_integration(new: Integration, environ: Mapping[str, str] | None = None) -> Path:
    """Add or replace (by name) one entry of the integrations file, leaving every other entry as written, even a
    broken one (it fails its own account until fixed)."""
    check_name(new.name)
    check_key_env(new.key_env)
    check_workspace(new.workspace)
    path = integrations_file(environ)
    entries: list = []
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix or delete the file") from None
        entries = list(raw.get("integrations") or []) if isinstance(raw, dict) else []
    entries = [e for e in entries if not (isinstance(e, dict) and e.get("name") == new.name)]
    entries.append(_document(new))
    return _write(path, {"integrations": entries})


def _document(i: Integration) -> dict:
    return {"name": i.name, "key_env": i.key_env,
            **({"workspace": i.workspace} if i.workspace != DEFAULT_WORKSPACE else {}),
            **({"api_base": i.api_base} if i.api_base else {}),
            **({"options": {"churn_recognition": i.options.churn_recognition, "discounts": i.options.discounts}}
               if i.options != MrrOptions() else {})}


def _write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return path


def save_integrations(integrations: list[Integration], environ: Mapping[str, str] | None = None) -> Path:
    return _write(integrations_file(environ), {"integrations": [_document(i) for i in integrations]})


@contextlib.contextmanager
def environment(values: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """Set environment variables for the life of the block, then restore what was there (the CLI points a run at
    the sandbox, a DAGSTER_HOME or an instant this way; runs read them back through this module)."""
    env = environ if environ is not None else os.environ
    saved = {k: env.get(k) for k in values}
    env.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v


@dataclass(frozen=True)
class Settings:
    """Every setting of the pipeline, resolved at once (`settings()`). Keys are not settings: only the names of the
    variables holding them are (`Integration.key_env`); a key is read when a reader is built (`secret`)."""

    duckdb_path: Path
    api_base: str | None
    integrations_file: Path
    integrations: tuple[Integration, ...]
    unusable_entries: tuple[str, ...]
    bets_file: Path
    as_of: dt.datetime | None
    duckdb_memory_limit: str | None
    refresh_cron: str
    refresh_timezone: str
    dagster_home: str | None

    @property
    def partitioned(self) -> bool:
        """Whether the accounts come from an integrations file (then each is a partition of the assets)."""
        return self.integrations_file.exists()


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Every setting from the environment (or `environ`) and the integrations file, resolved now.

    The reporting currency is resolved by the runs that use it (`reporting_currency`): its rates file is checked
    then, so a missing file fails those assets with a message, not the loading of the code location."""
    env = _env(environ)
    integrations, unusable = read_integrations(env)
    return Settings(duckdb_path=duckdb_path(env), api_base=api_base(env), integrations_file=integrations_file(env),
                    integrations=tuple(integrations), unusable_entries=tuple(unusable), bets_file=bets_file(env),
                    as_of=as_of(env), duckdb_memory_limit=duckdb_memory_limit(env), refresh_cron=refresh_cron(env),
                    refresh_timezone=refresh_timezone(env), dagster_home=dagster_home(env))
