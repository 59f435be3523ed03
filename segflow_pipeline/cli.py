"""The `segflow` command: check a key, refresh, manage integrations, run the sandbox and the demo.

Every command drives the same Definitions and job as the Dagster UI and schedule. Errors print one readable line
that says what to do, never a key, and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from segflow_pipeline import config
from segflow_pipeline.stripe_api.keys import StripeSetupError, redact

RESOURCES = ("subscriptions", "invoices", "customers", "prices", "products", "coupons", "events")


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

    demo = sub.add_parser("demo", help="run the whole pipeline on the sandbox (or on Stripe if STRIPE_API_KEY is set)")
    demo.add_argument("--subscriptions", type=int, default=1500)

    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return cmd_check(args.integration, args.key_env)
        if args.command == "refresh":
            return cmd_refresh(args.integration, full=args.full)
        if args.command == "integrations":
            return cmd_integrations_list() if args.action == "list" else cmd_integrations_add(args)
        if args.command == "sandbox":
            from segflow_pipeline.sandbox.server import serve_forever
            serve_forever(port=args.port, n_subscriptions=args.subscriptions, seed=args.seed,
                          latency_s=args.latency, rate_limit_per_s=args.rate_limit, error_rate=args.error_rate)
            return 0
        if args.command == "demo":
            return cmd_demo(args.subscriptions)
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
    from segflow_pipeline.stripe_api.client import StripeAPIFailure, StripeReader
    from segflow_pipeline.stripe_api.keys import empty_account_warning

    reader = StripeReader(integration.api_key(), api_base=integration.api_base or config.api_base(),
                          key_variable=integration.key_env)
    info = reader.key_info
    print(f"key: {info.masked} ({info.kind}, {info.mode} mode)", file=out)
    print(f"api: {reader.api_base}", file=out)
    with contextlib.suppress(StripeSetupError, StripeAPIFailure):
        account = reader.get("/v1/account", resource="account")
        print(f"account: {account.get('id')}"
              + (f" ({account['settings']['dashboard']['display_name']})" if _display_name(account) else ""), file=out)
    problems: list[str] = []
    for resource in RESOURCES:
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
              f"discounts={i.options.discounts}" + (f"\tapi_base={i.api_base}" if i.api_base else ""))
    for problem in unusable:
        print(f"-\tINVALID: {problem}")
    return 0


def cmd_integrations_add(args: argparse.Namespace) -> int:
    # The loader's own rules, before anything is checked or saved: what is saved always loads.
    config.check_name(args.name)
    config.check_key_env(args.key_env, "--key-env")
    new = config.Integration(name=args.name, key_env=args.key_env, api_base=args.api_base,
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

    return runner.refresh(name, full=full)


@contextlib.contextmanager
def sandbox_environment(n_subscriptions: int) -> Iterator[str]:
    """Start the emulator with the sandbox account and point the pipeline at it, for the life of the block."""
    from segflow_pipeline.sandbox.account import SANDBOX_KEYS, build_account
    from segflow_pipeline.sandbox.server import EmulatorServer

    key = next(k for k in SANDBOX_KEYS if k.startswith("sk_test_"))
    with EmulatorServer({key: build_account(n_subscriptions=n_subscriptions, seed=7)}) as server:
        saved = {k: os.environ.get(k) for k in ("STRIPE_API_KEY", "STRIPE_API_BASE")}
        os.environ.update({"STRIPE_API_KEY": key, "STRIPE_API_BASE": server.url})
        try:
            yield server.url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def cmd_demo(n_subscriptions: int) -> int:
    from segflow_pipeline import runner

    with contextlib.ExitStack() as stack:
        if os.environ.get("STRIPE_API_KEY"):
            print("STRIPE_API_KEY is set: the demo reads your Stripe account (read-only).")
        else:
            url = stack.enter_context(sandbox_environment(n_subscriptions))
            print(f"No STRIPE_API_KEY: using the built-in Stripe emulator at {url} with a sandbox account "
                  f"of {n_subscriptions} subscriptions.")
        code = runner.refresh(None, full=True)
    if code == 0:
        runner.print_summary(config.duckdb_path())
    return code


if __name__ == "__main__":
    sys.exit(main())
