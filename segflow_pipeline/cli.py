"""The `segflow` command: check a key, refresh, manage integrations, run the sandbox, the demo and the UI.

Every command drives the same Definitions and job as the Dagster UI and schedule. Errors print one readable line
that says what to do, never a key, and exit non-zero. Runs are recorded in DAGSTER_HOME (default `.dagster_home`
in the current folder, created when missing), so `segflow ui` / `make ui` shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from segflow_pipeline import bets, config
from segflow_pipeline.stripe_api.keys import REQUIRED_READ_PERMISSIONS, StripeSetupError, redact

DEFAULT_DAGSTER_HOME = ".dagster_home"
DEV_INSTANCE = Path(__file__).resolve().parents[1] / "deploy" / "dagster.dev.yaml"
SANDBOX_SUBSCRIPTIONS = 1500
SANDBOX_SEED = 7
UI_PORT = 3000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segflow", description="Stripe → DuckDB → daily MRR.")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a Stripe key: mode, account, permissions, subscriptions visible")
    check.add_argument("--integration", default=None, help="a configured integration (default: STRIPE_API_KEY)")
    check.add_argument("--key-env", default=None, help="environment variable holding the key to check")

    refresh = sub.add_parser("refresh", help="run the refresh job now (all integrations, or one)")
    refresh.add_argument("--integration", default=None)
    refresh.add_argument("--full", action="store_true", help="full Stripe sync instead of incremental")

    integrations = sub.add_parser("integrations", help="list or add Stripe accounts")
    isub = integrations.add_subparsers(dest="action", required=True)
    isub.add_parser("list")
    add = isub.add_parser("add", help="validate the key (as `segflow check`) and save the integration")
    add.add_argument("name")
    add.add_argument("--key-env", required=True, help="environment variable that holds the key (not the key)")
    add.add_argument("--workspace", default=config.DEFAULT_WORKSPACE,
                     help="the workspace whose published file holds this account's data (default: default)")
    add.add_argument("--api-base", default=None)
    add.add_argument("--churn-recognition", choices=["canceled_at", "period_end"], default="canceled_at")
    add.add_argument("--discounts", choices=["forever", "all", "none"], default="forever")

    sandbox = sub.add_parser("sandbox", help="the local Stripe emulator")
    ssub = sandbox.add_subparsers(dest="action", required=True)
    serve = ssub.add_parser("serve", help="serve the sandbox account on 127.0.0.1")
    serve.add_argument("--port", type=int, default=12111)
    serve.add_argument("--subscriptions", type=int, default=1500)
    serve.add_argument("--seed", type=int, default=7)
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    serve.add_argument("--rate-limit", type=float, default=None, help="requests per second per key")
    serve.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
    serve.add_argument("--now", default=None, metavar="ISO8601",
                       help="the instant the account is built at, e.g. 2028-02-29T00:00:05Z (default: now)")

    demo = sub.add_parser("demo", help="run the whole pipeline on the sandbox (or on Stripe if STRIPE_API_KEY is set)")
    demo.add_argument("--subscriptions", type=int, default=SANDBOX_SUBSCRIPTIONS)
    demo.add_argument("--sandbox-now", default=None, metavar="ISO8601",
                      help="build the sandbox account at this instant and run the pipeline as of it "
                           "(e.g. 2028-02-29T00:00:05Z; default: now)")

    ui = sub.add_parser("ui", help="the Dagster UI (dagster dev) on 127.0.0.1, on the sandbox unless STRIPE_API_KEY "
                                   "is set; runs are kept in DAGSTER_HOME (default .dagster_home)")
    ui.add_argument("--port", type=int, default=UI_PORT)
    ui.add_argument("--subscriptions", type=int, default=None,
                    help=f"sandbox size (default: the last demo's, else {SANDBOX_SUBSCRIPTIONS})")
    ui.add_argument("--sandbox-now", default=None, metavar="ISO8601",
                    help="build the sandbox at this instant and run as of it (default: the last demo's sandbox)")

    bets.add_cli_parser(sub)

    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args.integration, args.key_env)
        if args.command == "refresh":
            return cmd_refresh(args.integration, full=args.full)
        if args.command == "integrations":
            return cmd_integrations_list() if args.action == "list" else cmd_integrations_add(args)
        if args.command == "sandbox":
            from stripe_sandbox.server import serve_forever
            now = _epoch(config.parse_instant(args.now, "--now")) if args.now else None
            serve_forever(port=args.port, n_subscriptions=args.subscriptions, seed=args.seed,
                          latency_s=args.latency, rate_limit_per_s=args.rate_limit, error_rate=args.error_rate,
                          now=now)
            return 0
        if args.command == "demo":
            return cmd_demo(args.subscriptions, sandbox_now=args.sandbox_now)
        if args.command == "ui":
            return cmd_ui(args.port, n_subscriptions=args.subscriptions, sandbox_now=args.sandbox_now)
        if args.command == "bets":
            return bets.run_cli(args)
    except (StripeSetupError, config.ConfigError, _api_failure()) as exc:
        print(f"segflow: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


def _api_failure() -> type[Exception]:
    """Stripe failing after every retry (an outage, STRIPE_API_BASE pointing at a web page): one readable line too.
    Imported only once an error is being handled, so commands that never reach Stripe start without the SDK."""
    from segflow_pipeline.stripe_api.client import StripeAPIFailure

    return StripeAPIFailure


def _integration(name: str | None, key_env: str | None = None) -> config.Integration:
    if key_env:
        config.check_key_env(key_env, "--key-env")
        return config.Integration(name=name or "check", key_env=key_env)
    integrations = config.load_integrations()
    found = integrations[0] if name is None else next((i for i in integrations if i.name == name), None)
    if found is None:
        raise config.ConfigError(
            f"no integration named {name!r}; `segflow integrations list` shows the configured ones")
    if found.problem:
        raise config.ConfigError(found.problem)
    return found


def check_integration(integration: config.Integration, out=sys.stdout) -> bool:
    """The "Save" step of connecting Stripe: key form, mode, account, permissions, visible subscriptions."""
    from segflow_pipeline.resources.stripe import StripeResource
    from segflow_pipeline.stripe_api.client import StripeAPIFailure
    from segflow_pipeline.stripe_api.keys import empty_account_warning

    # The pipeline's own resource, reading the key from the integration's variable, whatever its name.
    reader = StripeResource(key_env=integration.key_env, api_base=config.api_base()).reader(integration)
    info = reader.key_info
    print(f"key: {info.masked} ({info.kind}, {info.mode} mode)", file=out)
    print(f"api: {reader.api_base}", file=out)
    with contextlib.suppress(StripeSetupError, StripeAPIFailure):
        account = reader.get("/v1/account", resource="account")
        print(f"account: {account.get('id')}"
              + (f" ({account['settings']['dashboard']['display_name']})" if _display_name(account) else ""), file=out)
    problems: list[str] = []
    for resource in REQUIRED_READ_PERMISSIONS:
        try:
            reader.get(f"/v1/{resource}", {"limit": 1}, resource=resource)
            print(f"read {resource}: ok", file=out)
        except StripeSetupError as exc:
            if "(401)" in str(exc):
                raise
            print(f"read {resource}: MISSING", file=out)
            problems.append(str(exc))
    if "subscriptions" not in " ".join(problems):
        count = sum(len(page) for page in reader.iter_pages("/v1/subscriptions", {"status": "all"},
                                                             resource="subscriptions"))
        print(f"subscriptions visible: {count}", file=out)
        if count == 0:
            print(f"warning: {empty_account_warning(info)}", file=out)
    for problem in problems:
        print(f"error: {problem}", file=out)
    return not problems


def _display_name(account: dict) -> str | None:
    return ((account.get("settings") or {}).get("dashboard") or {}).get("display_name")


def cmd_check(name: str | None, key_env: str | None) -> int:
    return 0 if check_integration(_integration(name, key_env)) else 2


def cmd_integrations_list() -> int:
    path = config.integrations_file()
    integrations, unusable = config.read_integrations()
    print(f"# {path if path.exists() else 'no ' + str(path) + ': the environment key only'}")
    for i in integrations:
        if i.problem:
            print(f"{i.name}\tINVALID: {i.problem}")
            continue
        state = "key set" if i.api_key() else "KEY NOT SET"
        print(f"{i.name}\tkey_env={i.key_env} ({state})\tchurn_recognition={i.options.churn_recognition}\t"
              f"discounts={i.options.discounts}" + (f"\tapi_base={i.api_base}" if i.api_base else "")
              + f"\tworkspace={i.workspace}")
    for problem in unusable:
        print(f"-\tINVALID: {problem}")
    return 0


def cmd_integrations_add(args: argparse.Namespace) -> int:
    # The loader's own rules, before anything is checked or saved: what is saved always loads.
    config.check_name(args.name)
    config.check_key_env(args.key_env, "--key-env")
    config.check_workspace(args.workspace, "--workspace")
    new = config.Integration(name=args.name, key_env=args.key_env, api_base=args.api_base,
                             workspace=args.workspace,
                             options=config.MrrOptions(churn_recognition=args.churn_recognition,
                                                       discounts=args.discounts))
    if not check_integration(new):
        print("segflow: not saved: fix the key's permissions and run the command again", file=sys.stderr)
        return 2
    # Without a file the implicit `default` becomes explicit only if the user adds it; other entries stay as
    # written, even broken ones (each fails its own account until fixed).
    path = config.add_integration(new)
    print(f"saved integration {new.name!r} to {path}")
    return 0


def cmd_refresh(name: str | None, *, full: bool = False) -> int:
    from segflow_pipeline import runner

    with dagster_home() as home:
        outcome = runner.refresh(name, full=full)
    if outcome == 0:
        refreshed = [i for i in config.load_integrations() if name is None or i.name == name]
        for workspace in dict.fromkeys(i.workspace for i in refreshed if i.workspace):
            runner.print_headline(config.workspace_path(workspace), dagster_home=home)
    return outcome


def _epoch(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.timezone.utc).timestamp())


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def dagster_home() -> Iterator[Path]:
    """DAGSTER_HOME as set, else `.dagster_home` in the current folder; created if missing, so runs are kept.
    A new one gets the project's instance settings for one machine (deploy/dagster.dev.yaml: at most one run per
    account at a time, no telemetry)."""
    home = Path(config.dagster_home() or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(DEV_INSTANCE.read_text() if DEV_INSTANCE.exists() else "telemetry:\n  enabled: false\n")
    with config.environment({config.DAGSTER_HOME_ENV: str(home)}):
        yield home


@dataclass(frozen=True)
class Sandbox:
    """Which sandbox account a demo used: rebuilt identically by `segflow ui`, so the UI's runs read the same
    account the demo synced. `fixed`: built at an instant the user chose, and runs are made as of it."""

    now: int
    subscriptions: int
    fixed: bool

    @staticmethod
    def record_path() -> Path:
        from segflow_pipeline.warehouse.files import state_dir

        return state_dir(config.duckdb_path()) / "sandbox.json"

    def save(self) -> None:
        path = self.record_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"now": self.now, "subscriptions": self.subscriptions, "fixed": self.fixed}))

    @classmethod
    def last(cls) -> Sandbox | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            raw = json.loads(cls.record_path().read_text())
            return cls(now=int(raw["now"]), subscriptions=int(raw["subscriptions"]), fixed=bool(raw["fixed"]))
        return None


@contextlib.contextmanager
def sandbox_environment(n_subscriptions: int, now: int | None = None) -> Iterator[str]:
    """Start the emulator with the sandbox account (built at `now`, epoch seconds, default the current time) and
    point the pipeline at it, for the life of the block."""
    from stripe_sandbox.account import build_account
    from stripe_sandbox.server import SANDBOX_KEYS, EmulatorServer

    key = next(k for k in SANDBOX_KEYS if k.startswith("sk_test_"))
    account = build_account(n_subscriptions=n_subscriptions, seed=SANDBOX_SEED, now=now)
    with EmulatorServer({key: account}) as server:
        with config.environment({config.API_KEY_ENV: key, config.API_BASE_ENV: server.url}):
            yield server.url


def _sandbox_instant(sandbox_now: str | None, option: str) -> int | None:
    """The instant to build the sandbox at: the option, else SEGFLOW_AS_OF, else None (now). Both set and
    different is refused: the sandbox and the pipeline would disagree on what today is."""
    chosen = config.parse_instant(sandbox_now, option) if sandbox_now else None
    fixed = config.as_of()
    if chosen is not None and fixed is not None and chosen != fixed:
        raise config.ConfigError(f"{option} {sandbox_now} and {config.AS_OF_ENV}={config.text(config.AS_OF_ENV)} "
                                 f"differ; give one of them")
    moment = chosen or fixed
    return _epoch(moment) if moment is not None else None


def cmd_demo(n_subscriptions: int, sandbox_now: str | None = None) -> int:
    from segflow_pipeline import runner

    with contextlib.ExitStack() as stack:
        home = stack.enter_context(dagster_home())
        sandbox: Sandbox | None = None
        if config.secret(config.API_KEY_ENV):
            if sandbox_now:
                raise config.ConfigError("--sandbox-now builds the built-in sandbox account; unset STRIPE_API_KEY "
                                         "to use it (your Stripe account is always read as of now)")
            print("STRIPE_API_KEY is set: the demo reads your Stripe account (read-only).")
        else:
            instant = _sandbox_instant(sandbox_now, "--sandbox-now")
            url = stack.enter_context(sandbox_environment(n_subscriptions, instant))
            sandbox = Sandbox(now=instant if instant is not None else _epoch(runner.utc_now()),
                              subscriptions=n_subscriptions, fixed=instant is not None)
            if sandbox.fixed:
                stack.enter_context(config.environment({config.AS_OF_ENV: _iso(sandbox.now)}))
            stack.enter_context(config.sandbox_fx_rates())  # a usd total too, unless SEGFLOW_FX_RATES is set
            print(f"No STRIPE_API_KEY: using the built-in Stripe emulator at {url} with a sandbox account of "
                  f"{n_subscriptions} subscriptions" + (f", as of {_iso(sandbox.now)}." if sandbox.fixed else "."))
        outcome = runner.refresh(None, full=True)
        if sandbox is not None:
            sandbox.save()
    if outcome == 0:
        runner.print_headline(config.duckdb_path(), dagster_home=home)
    return outcome


def cmd_ui(port: int, *, n_subscriptions: int | None = None, sandbox_now: str | None = None) -> int:
    """`dagster dev` on 127.0.0.1:`port` with DAGSTER_HOME kept, on the sandbox unless STRIPE_API_KEY is set."""
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(dagster_home())
        env = dict(os.environ)  # the environment `dagster dev` starts with
        if config.secret(config.API_KEY_ENV):
            if sandbox_now:
                raise config.ConfigError("--sandbox-now builds the built-in sandbox account; unset STRIPE_API_KEY "
                                         "to use it")
            print("STRIPE_API_KEY is set: the UI reads your Stripe account (read-only).")
        else:
            instant = _sandbox_instant(sandbox_now, "--sandbox-now")
            last = Sandbox.last()
            if instant is not None:
                sandbox = Sandbox(now=instant, subscriptions=n_subscriptions or SANDBOX_SUBSCRIPTIONS, fixed=True)
            elif last is not None and n_subscriptions in (None, last.subscriptions):
                sandbox = last  # the account the last demo synced: incremental runs stay consistent with it
            else:
                from segflow_pipeline import runner

                sandbox = Sandbox(now=_epoch(runner.utc_now()),
                                  subscriptions=n_subscriptions or SANDBOX_SUBSCRIPTIONS, fixed=False)
            url = stack.enter_context(sandbox_environment(sandbox.subscriptions, sandbox.now))
            sandbox.save()
            env.update({config.API_KEY_ENV: config.secret(config.API_KEY_ENV), config.API_BASE_ENV: url})
            if sandbox.fixed:
                env[config.AS_OF_ENV] = _iso(sandbox.now)
            print(f"Sandbox Stripe emulator at {url}: {sandbox.subscriptions} subscriptions, built as of "
                  f"{_iso(sandbox.now)}" + (" (runs are made as of that instant)" if sandbox.fixed else ""))
        dagster = Path(sys.executable).with_name("dagster")
        command = [str(dagster if dagster.exists() else "dagster"), "dev", "-m", "segflow_pipeline.definitions",
                   "-h", "127.0.0.1", "-p", str(port)]
        print(f"Dagster UI: http://127.0.0.1:{port} (runs and materializations kept in {home}). "
              "Assets → Materialize all refreshes everything; Ctrl-C stops the UI and the sandbox.", flush=True)
        # dagster dev stops its webserver, daemon and code server on SIGINT (and on SIGTERM, which it maps to its
        # SIGINT handler). A shell starting us in the background ignores SIGINT, and that would be inherited:
        # the child gets the default back, so Ctrl-C and a plain `kill PID` of this command both stop everything.
        child = subprocess.Popen(command, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
        try:
            return child.wait()
        except KeyboardInterrupt:
            # dagster dev got the same Ctrl-C (same process group) and shuts its own processes down.
            with contextlib.suppress(subprocess.TimeoutExpired):
                return child.wait(timeout=30)
            child.send_signal(signal.SIGTERM)
            return child.wait()


if __name__ == "__main__":
    sys.exit(main())
