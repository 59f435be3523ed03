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
AS_OF_ENV = "SEGFLOW_AS_OF"
FX_RATES_ENV = "SEGFLOW_FX_RATES"
REPORTING_CURRENCY_ENV = "SEGFLOW_REPORTING_CURRENCY"
DEFAULT_REPORTING_CURRENCY = "usd"
# Illustrative usd rates for eur and jpy, one a month from 2000 to 2040, so that the demo on the sandbox (which can be
# built at any date) shows a reporting currency. Never used unless the demo runs on the sandbox.
SANDBOX_FX_RATES = Path(__file__).resolve().parent / "sandbox" / "fx_rates.csv"
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
    key_env: str = "STRIPE_API_KEY"
    api_base: str | None = None
    options: MrrOptions = field(default_factory=MrrOptions)
    problem: str | None = None

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        return (environ if environ is not None else os.environ).get(self.key_env, "")


def duckdb_path(environ: Mapping[str, str] | None = None) -> Path:
    env = environ if environ is not None else os.environ
    return Path(env.get("SEGFLOW_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH)


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
    env = environ if environ is not None else os.environ
    text = env.get(AS_OF_ENV, "").strip()
    return parse_instant(text) if text else None


def api_base(environ: Mapping[str, str] | None = None) -> str | None:
    env = environ if environ is not None else os.environ
    return env.get("STRIPE_API_BASE") or None


def integrations_file(environ: Mapping[str, str] | None = None) -> Path:
    env = environ if environ is not None else os.environ
    return Path(env.get("SEGFLOW_INTEGRATIONS_FILE") or DEFAULT_INTEGRATIONS_FILE)


@dataclass(frozen=True)
class ReportingCurrency:
    """Convert every currency into `currency` with the rates of `rates_file` (units of `currency` per unit)."""

    currency: str
    rates_file: Path


def reporting_currency(environ: Mapping[str, str] | None = None) -> ReportingCurrency | None:
    """The reporting currency settings, or None when SEGFLOW_FX_RATES is not set (nothing is converted then)."""
    env = environ if environ is not None else os.environ
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
    env = environ if environ is not None else os.environ
    chosen = (env.get(REPORTING_CURRENCY_ENV) or DEFAULT_REPORTING_CURRENCY).strip().lower()
    if env.get(FX_RATES_ENV) or chosen != DEFAULT_REPORTING_CURRENCY:
        yield
        return
    saved = {k: env.get(k) for k in (FX_RATES_ENV, REPORTING_CURRENCY_ENV)}
    env.update({FX_RATES_ENV: str(SANDBOX_FX_RATES), REPORTING_CURRENCY_ENV: DEFAULT_REPORTING_CURRENCY})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v


def bets_file(environ: Mapping[str, str] | None = None) -> Path:
    """The bets file (`bets.py`): SEGFLOW_BETS_FILE, default `bets.yaml` in the working directory."""
    env = environ if environ is not None else os.environ
    return Path(env.get("SEGFLOW_BETS_FILE") or DEFAULT_BETS_FILE)


def check_name(name: str, where: str = "integration name") -> None:
    """The rule for account names (they become partition keys, file names and check names)."""
    if not NAME_PATTERN.match(name or ""):
        raise ConfigError(f"{where} {name!r} must be 1-63 lowercase letters, digits, '_' or '-', starting with a "
                          "letter or digit")


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
    return Integration(name=str(entry["name"]), key_env=key_env, api_base=api_base,
                       options=MrrOptions.from_mapping(entry.get("options"), f"{where}: options"))


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
            result.append(Integration(name=str(name), key_env=str(entry.get("key_env") or ""), problem=str(exc)))
    if not result:
        raise ConfigError("; ".join(unusable))
    return result, unusable


def load_integrations(environ: Mapping[str, str] | None = None) -> list[Integration]:
    """The configured accounts (see `read_integrations`); entries naming no usable account are left out."""
    return read_integrations(environ)[0]


def add_integration(new: Integration, environ: Mapping[str, str] | None = None) -> Path:
    """Add or replace (by name) one entry of the integrations file, leaving every other entry as written, even a
    broken one (it fails its own account until fixed)."""
    check_name(new.name)
    check_key_env(new.key_env)
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
