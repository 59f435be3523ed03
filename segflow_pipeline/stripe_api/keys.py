"""Stripe API keys: which kind a key is, whether it may be used, how to show it, and the errors users see.

Everything that could print a key goes through `mask` or `redact` first. `redact` masks every key this process has
uses (each valid key is remembered by `classify`, which every reader calls) in any form a server or proxy might echo it:
whole, without its `sk_test_` prefix, or any slice of 12 characters or more. Errors here name the fix, following the
troubleshooting steps Stripe users know (Dashboard → Developers → API keys).
No Dagster, no I/O.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_]+")
# Permissions a restricted key needs: read on every resource the sync lists.
REQUIRED_READ_PERMISSIONS = ("subscriptions", "invoices", "customers", "prices", "products", "coupons", "events")


class StripeSetupError(Exception):
    """A problem the user fixes in their configuration or Stripe dashboard; the message says how."""


@dataclass(frozen=True)
class KeyInfo:
    kind: Literal["secret", "restricted"]
    mode: Literal["test", "live"]
    masked: str


def mask(key: str) -> str:
    """`sk_test_…abcd`: the prefix and the last four characters, as Stripe's dashboard shows keys."""
    match = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)", key or "")
    prefix = match.group(1) if match else ""
    tail = key[-4:] if key and len(key) > len(prefix) + 4 else ""
    return f"{prefix}…{tail}"


# The shortest slice of a key that is masked: a 12-character run of a key's random part is as good as unique, while
# shorter runs would also hit ordinary text (`sk_test_` itself is 8).
SECRET_RUN = 12
_seen: set[str] = set()
_seen_lock = threading.Lock()


def remember(key: str) -> None:
    """Have `redact` mask this key from now on, wherever it is asked to."""
    key = (key or "").strip()
    if len(key) >= SECRET_RUN:
        with _seen_lock:
            _seen.add(key)


@lru_cache(maxsize=64)
def _runs_of(key: str) -> frozenset[str]:
    return frozenset(key[i:i + SECRET_RUN] for i in range(len(key) - SECRET_RUN + 1))


def _mask_runs(text: str, key: str) -> str:
    """Replace every run of `text` that is a slice of `key` at least SECRET_RUN long: the whole key by its masked
    form, any other slice by a marker naming the key masked."""
    runs = _runs_of(key)
    if not any(run in text for run in runs):
        return text
    out: list[str] = []
    i = start = 0
    while i <= len(text) - SECRET_RUN:
        if text[i:i + SECRET_RUN] not in runs:
            i += 1
            continue
        end = i + SECRET_RUN
        while end < len(text) and text[i:end + 1] in key:
            end += 1
        out.append(text[start:i])
        out.append(mask(key) if text[i:end] == key else f"[part of key {mask(key)}]")
        i = start = end
    out.append(text[start:])
    return "".join(out)


def redact(text: str, *secrets: str) -> str:
    """`text` without any key: every key this process uses (`remember`) and every given secret masked in every
    form (whole, without prefix, any slice of SECRET_RUN characters or more), then anything shaped like a key."""
    with _seen_lock:
        keys = set(_seen)
    keys.update(s.strip() for s in secrets if s and s.strip())
    for key in sorted(keys, key=len, reverse=True):
        if len(key) >= SECRET_RUN:
            text = _mask_runs(text, key)
        else:
            text = text.replace(key, mask(key))
    return KEY_PATTERN.sub(lambda m: mask(m.group(0)), text)


def classify(key: str | None, *, variable: str = "STRIPE_API_KEY") -> KeyInfo:
    """Validate the key's form before any request is made; raise `StripeSetupError` saying what to do. A valid key
    (one requests are made with) is remembered for `redact`."""
    key = (key or "").strip()
    if not key:
        raise StripeSetupError(
            f"No Stripe API key: set {variable} to a secret key (sk_live_… or sk_test_…) or a restricted key "
            "(rk_live_… or rk_test_…) from Stripe Dashboard → Developers → API keys. Without a key, run "
            "`segflow demo` to use the built-in sandbox account."
        )
    if key.startswith("pk_"):
        raise StripeSetupError(
            f"{variable} holds a publishable key ({mask(key)}): publishable keys cannot read subscriptions; "
            "use a secret or restricted key from Developers → API keys."
        )
    match = re.fullmatch(r"(sk|rk)_(test|live)_[A-Za-z0-9_]{4,}", key)
    if not match:
        raise StripeSetupError(
            f"{variable} is not a Stripe API key ({mask(key)}): expected sk_live_…, sk_test_…, rk_live_… or "
            "rk_test_…; copy it again from Stripe Dashboard → Developers → API keys (no quotes or spaces)."
        )
    remember(key)
    kind = "secret" if match.group(1) == "sk" else "restricted"
    return KeyInfo(kind=kind, mode=match.group(2), masked=mask(key))  # type: ignore[arg-type]


def invalid_key_message(info: KeyInfo) -> str:
    return (
        f"Stripe rejected the API key {info.masked} (401): it is invalid, expired or was revoked. Create or roll a "
        f"{info.mode}-mode key in Stripe Dashboard → Developers → API keys and update the environment variable."
    )


def missing_permission_message(info: KeyInfo, resource: str, stripe_message: str = "") -> str:
    perm = re.search(r"rak_[a-z_]+", stripe_message or "")
    needed = ", ".join(REQUIRED_READ_PERMISSIONS)
    return (
        f"The {info.kind} key {info.masked} may not read {resource}"
        + (f" (missing permission {perm.group(0)})" if perm else "")
        + f" (403). Edit the restricted key in Stripe Dashboard → Developers → API keys and give it Read access to: "
        f"{needed}."
    )


def empty_account_warning(info: KeyInfo) -> str:
    other = "live" if info.mode == "test" else "test"
    return (
        f"The {info.mode}-mode key {info.masked} sees no subscriptions at all. If your customers are in {other} mode, "
        f"use the {other}-mode key (sk_{other}_… or rk_{other}_…) instead."
    )
