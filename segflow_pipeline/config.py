"""Settings from the environment and the integrations file, as frozen values. No Dagster, no side effects at import.

Environment: STRIPE_API_KEY, STRIPE_API_BASE, SEGFLOW_DUCKDB_PATH; project-specific variables start with SEGFLOW_.
The integrations file names, for each Stripe account, the environment variable that holds its key, never the key
itself. SEGFLOW_AS_OF sets the moment a run treats as "now" (default: the real time), so a run can be repeated as
of any instant, e.g. against a sandbox account built at that instant. A reporting currency is optional:
SEGFLOW_FX_RATES names a CSV file of rates (`date,currency,rate`) and SEGFLOW_REPORTING_CURRENCY the currency they
convert into.
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
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
FX_RATES_ENV = "SEGFLOW_FX_RATES"
REPORTING_CURRENCY_ENV = "SEGFLOW_REPORTING_CURRENCY"
DEFAULT_REPORTING_CURRENCY = "usd"
# Illustrative usd rates for eur and jpy, one a month from 2000 to 2040, so that the demo on the sandbox (which can be
# built at any date) shows a reporting currency. Never used unless the demo runs on the sandbox.
SANDBOX_FX_RATES = Path(__file__).resolve().parent / "sandbox" / "fx_rates.csv"


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
    """One connected Stripe account."""

    name: str
    key_env: str = "STRIPE_API_KEY"
    api_base: str | None = None
    options: MrrOptions = field(default_factory=MrrOptions)

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


def load_integrations(environ: Mapping[str, str] | None = None) -> list[Integration]:
    """The configured accounts; without a file, one integration `default` reading STRIPE_API_KEY."""
    path = integrations_file(environ)
    if not path.exists():
        return [Integration(name=DEFAULT_INTEGRATION)]
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix or delete the file") from None
    entries = raw.get("integrations") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a top-level 'integrations:' list with at least one account")
    result: list[Integration] = []
    for i, entry in enumerate(entries):
        where = f"{path}: integrations[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{where}: each integration needs a name and key_env")
        if "key" in entry or "api_key" in entry:
            raise ConfigError(f"{where}: never put a key in this file; name its environment variable with key_env")
        name = str(entry["name"])
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"{where}: name {name!r} must be lowercase letters, digits, '_' or '-'")
        key_env = str(entry.get("key_env") or "")
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key_env):
            raise ConfigError(f"{where}: key_env must name an environment variable, like STRIPE_API_KEY_ACME")
        result.append(Integration(name=name, key_env=key_env, api_base=entry.get("api_base"),
                                  options=MrrOptions.from_mapping(entry.get("options"), f"{where}.options")))
    names = [i.name for i in result]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: integration names must be unique, got {names}")
    return result


def save_integrations(integrations: list[Integration], environ: Mapping[str, str] | None = None) -> Path:
    path = integrations_file(environ)
    doc = {"integrations": [
        {"name": i.name, "key_env": i.key_env,
         **({"api_base": i.api_base} if i.api_base else {}),
         **({"options": {"churn_recognition": i.options.churn_recognition, "discounts": i.options.discounts}}
            if i.options != MrrOptions() else {})}
        for i in integrations]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)
    return path
