"""Session-wide read-only audit: across the whole test session, every Stripe emulator received GET requests only.

Every `EmulatorServer` started in this process is registered (its `method_totals`, a counter the server never
resets, is kept; the server itself is not, so big accounts are freed with their fixtures). Each test's share of
requests is attributed to it, fixtures included; at the end of the session any request with another method fails
the session with the test that sent it. Tests of the emulator's own refusal of writes are marked
`emulator_write_probe` and are the only ones allowed to send them.
"""

from __future__ import annotations

import collections

import pytest

from stripe_sandbox.server import EmulatorServer

WRITE_PROBE = "emulator_write_probe"

_servers: list[tuple[str, collections.Counter]] = []
_violations: list[str] = []
_original_start = EmulatorServer.start


def _audited_start(self: EmulatorServer) -> EmulatorServer:
    started = _original_start(self)
    _servers.append((self.url, self.method_totals))
    return started


EmulatorServer.start = _audited_start  # type: ignore[method-assign]


def _non_get() -> dict[tuple[int, str], int]:
    return {(i, method): n for i, (_, totals) in enumerate(_servers) for method, n in totals.items()
            if method != "GET"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{WRITE_PROBE}: sends non-GET requests to an emulator on purpose, to "
                                       "test that it refuses them (exempt from the session's read-only audit)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    before = _non_get()
    yield
    after = _non_get()
    sent = {key: n - before.get(key, 0) for key, n in after.items() if n > before.get(key, 0)}
    if sent and item.get_closest_marker(WRITE_PROBE) is None:
        what = ", ".join(f"{n} {method} to {_servers[i][0]}" for (i, method), n in sorted(sent.items()))
        _violations.append(f"{item.nodeid}: {what}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _violations:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    served = sum(totals.get("GET", 0) for _, totals in _servers)
    if _violations:
        terminalreporter.section("READ-ONLY AUDIT FAILED", red=True, bold=True)
        terminalreporter.line("Stripe emulators received requests other than GET (segflow must only read):",
                              red=True)
        for line in _violations:
            terminalreporter.line(f"  {line}", red=True)
    elif _servers:
        terminalreporter.line(f"read-only audit: {len(_servers)} emulator(s), {served} GET request(s), "
                              "no other method outside write-probe tests")
