"""Serve N sandbox Stripe accounts from one emulator and describe them as integrations, for the local stack.

    python deploy/sandbox_accounts.py --accounts 5 --subscriptions 40 --latency 0.3 --port 12111 \
        --integrations .stack/integrations.yaml --env-file .stack/sandbox.env

Account i (1-based) is integration `acctNN`, its key is in the variable STRIPE_KEY_ACCTNN and looks like
`sk_test_acctNN_<hex>`. These are keys of the local emulator only (derived from the account number), which is why
they may be written to the env file that the other stack processes source; real keys come from a secret store
(deploy/README.md). The integrations file names the variables, never the keys. Both files are written after the
server listens, so their presence means the emulator is ready. Serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stripe_sandbox.account import SandboxAccount, build_account  # noqa: E402
from stripe_sandbox.server import EmulatorServer  # noqa: E402


@dataclass(frozen=True)
class SandboxIntegration:
    name: str
    key_env: str
    key: str


def sandbox_integration(i: int) -> SandboxIntegration:
    name = f"acct{i:02d}"
    digest = hashlib.sha256(f"segflow-sandbox-{name}".encode()).hexdigest()[:24]
    return SandboxIntegration(name=name, key_env=f"STRIPE_KEY_{name.upper()}", key=f"sk_test_{name}_{digest}")


def build_accounts(n: int, subscriptions: int, now: int | None = None) -> dict[str, SandboxAccount]:
    """Key -> account for integrations 1..n; every account differs (its own seed) and shares one `now`."""
    now = int(time.time()) if now is None else now
    return {sandbox_integration(i).key: build_account(n_subscriptions=subscriptions, seed=1000 + i, now=now)
            for i in range(1, n + 1)}


def write_integrations(path: Path, integrations: list[SandboxIntegration]) -> None:
    doc = {"integrations": [{"name": s.name, "key_env": s.key_env} for s in integrations]}
    _atomic_write(path, yaml.safe_dump(doc, sort_keys=False))


def write_env(path: Path, api_base: str, integrations: list[SandboxIntegration]) -> None:
    lines = [f"STRIPE_API_BASE={api_base}"] + [f"{s.key_env}={s.key}" for s in integrations]
    _atomic_write(path, "\n".join(lines) + "\n", mode=0o600)


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--subscriptions", type=int, default=40, help="subscriptions per account")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds added to each request")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--integrations", type=Path, required=True, help="integrations file to write")
    parser.add_argument("--env-file", type=Path, required=True, help="KEY=value file to write (mode 600)")
    args = parser.parse_args()

    integrations = [sandbox_integration(i) for i in range(1, args.accounts + 1)]
    accounts = build_accounts(args.accounts, args.subscriptions)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmulatorServer(accounts, port=args.port, latency_s=args.latency) as server:
        write_integrations(args.integrations, integrations)
        write_env(args.env_file, server.url, integrations)
        print(f"emulator: {len(accounts)} accounts of {args.subscriptions} subscriptions on {server.url}, "
              f"latency {args.latency:g}s", flush=True)
        stop.wait()
    print("emulator: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
