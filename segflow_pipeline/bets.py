"""Bets: the initiatives whose effect on MRR is measured, kept in a YAML file the team edits (or `segflow bets add`).

Belongs here: reading, validating and writing the bets file. No Dagster, no DuckDB, nothing read at import: the
path comes from `config.bets_file()` (SEGFLOW_BETS_FILE, default `bets.yaml` in the working directory).
Not here: what a bet did to MRR (`transform/bet_impact.py`).

```yaml
bets:
  - name: annual-plan-discount     # unique
    start: 2026-03-01              # first day the bet is live (UTC)
    end: 2026-05-31                # optional: last day
    product: prod_NffrFeUfNV2Hib   # optional: measure this product's MRR only ...
    note: 2 months free on yearly  # optional
  - name: new-pricing-page
    start: 2026-04-15
    price: price_1MoBy5LkdIwHu7ix  # ... or this price's (not both)
```
A file that breaks a rule fails with the file, the line and the reason.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from segflow_pipeline.config import ConfigError

FIELDS = ("name", "start", "end", "product", "price", "note")
PRODUCT_ID = re.compile(r"^prod_[A-Za-z0-9]+$")
PRICE_ID = re.compile(r"^(price|plan)_[A-Za-z0-9_]+$")
MAX_NAME = 100


class BetsError(ConfigError):
    """The bets file, or a bet to add, breaks a rule; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Bet:
    """One initiative: from `start` (inclusive) to `end` (inclusive, open when None), on all MRR or on one
    product's or price's."""

    name: str
    start: dt.date
    end: dt.date | None = None
    product: str | None = None
    price: str | None = None
    note: str | None = None

    @property
    def segment(self) -> str:
        if self.product:
            return f"product {self.product}"
        if self.price:
            return f"price {self.price}"
        return "all MRR"

    def as_yaml(self) -> dict:
        entry: dict = {"name": self.name, "start": self.start}
        for key in ("end", "product", "price", "note"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        return entry


def make_bet(name: str, start: str | dt.date, end: str | dt.date | None = None, product: str | None = None,
             price: str | None = None, note: str | None = None, where: str = "bet") -> Bet:
    """A validated Bet from text values (as the CLI and the file give them)."""
    name = (name or "").strip()
    if not name:
        raise BetsError(f"{where}: a bet needs a name")
    if len(name) > MAX_NAME or "\n" in name:
        raise BetsError(f"{where}: name {name[:40]!r}... must be one line of at most {MAX_NAME} characters")
    start_date = _date(start, "start", where)
    end_date = _date(end, "end", where) if end not in (None, "") else None
    if end_date is not None and end_date < start_date:
        raise BetsError(f"{where}: end {end_date} is before start {start_date}")
    if product and price:
        raise BetsError(f"{where}: give a product or a price, not both (a price already belongs to one product)")
    if product is not None and not PRODUCT_ID.match(str(product)):
        raise BetsError(f"{where}: product {product!r} is not a Stripe product ID; it looks like prod_NffrFeUfNV2Hib")
    if price is not None and not PRICE_ID.match(str(price)):
        raise BetsError(f"{where}: price {price!r} is not a Stripe price ID; it looks like price_1MoBy5LkdIwHu7ix "
                        "(or plan_... for a legacy plan)")
    return Bet(name=name, start=start_date, end=end_date, product=str(product) if product else None,
               price=str(price) if price else None, note=str(note).strip() if note else None)


def _date(value: str | dt.date, field: str, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value or "").strip()
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BetsError(f"{where}: {field} {text!r} is not a date; write YYYY-MM-DD, e.g. 2026-03-01") from None


def parse_bets(text: str, where: str = "bets.yaml") -> list[Bet]:
    """The bets of a file's text; raises BetsError with `where:line: reason` for the first broken rule."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem += f", {context} on line {context_mark.line + 1}"
        raise BetsError(f"{where}{line}: not valid YAML ({problem})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise BetsError(f"{where}:{root.start_mark.line + 1}: expected a top-level 'bets:' list")
    top = {_scalar(k): v for k, v in root.value}
    unknown = [k for k in top if k != "bets"]
    if unknown:
        key_node = next(k for k, _ in root.value if _scalar(k) == unknown[0])
        raise BetsError(f"{where}:{key_node.start_mark.line + 1}: unknown key {unknown[0]!r}; the file holds "
                        "one 'bets:' list")
    entries = top.get("bets")
    if entries is None or (isinstance(entries, yaml.ScalarNode) and entries.value in ("", "~", "null")):
        return []
    if not isinstance(entries, yaml.SequenceNode):
        raise BetsError(f"{where}:{entries.start_mark.line + 1}: 'bets:' must be a list of bets (lines starting "
                        "with '- name: ...')")
    result: list[Bet] = []
    seen: dict[str, int] = {}
    for node in entries.value:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            raise BetsError(f"{where}:{line}: each bet is a mapping with name and start")
        values: dict[str, str] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key not in FIELDS:
                raise BetsError(f"{where}:{key_node.start_mark.line + 1}: unknown field {key!r}; a bet has "
                                + ", ".join(FIELDS))
            if not isinstance(value_node, yaml.ScalarNode):
                raise BetsError(f"{where}:{value_node.start_mark.line + 1}: {key} must be a single value")
            if key in values:
                raise BetsError(f"{where}:{key_node.start_mark.line + 1}: {key} is given twice")
            values[key] = value_node.value
        for required in ("name", "start"):
            if not values.get(required):
                raise BetsError(f"{where}:{line}: the bet has no {required}")
        bet = make_bet(values["name"], values["start"], values.get("end") or None, values.get("product") or None,
                       values.get("price") or None, values.get("note"), where=f"{where}:{line}")
        folded = bet.name.casefold()
        if folded in seen:
            raise BetsError(f"{where}:{line}: a bet named {bet.name!r} already exists (line {seen[folded]}); "
                            "names must be unique")
        seen[folded] = line
        result.append(bet)
    return result


def _scalar(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else str(node.tag)


def load_bets(path: Path) -> list[Bet]:
    """The bets of `path`; none when the file does not exist."""
    if not path.exists():
        return []
    return parse_bets(path.read_text(), where=str(path))


def add_bet(path: Path, bet: Bet) -> Path:
    """Append `bet` to the file (created if missing) after validating the file and the name; existing lines and
    comments are kept. Written beside the file and renamed over it, so a reader never sees half a file."""
    existing = load_bets(path)
    if any(b.name.casefold() == bet.name.casefold() for b in existing):
        raise BetsError(f"{path}: a bet named {bet.name!r} already exists; choose another name")
    text = path.read_text() if path.exists() else ""
    candidate = _appended(text, bet)
    if candidate is None or parse_bets(candidate, str(path)) != [*existing, bet]:
        # the file's layout does not take a plain append (flow style, other keys after the list): rewrite it
        candidate = "# Bets: see `segflow bets add --help`.\n" + yaml.safe_dump(
            {"bets": [b.as_yaml() for b in [*existing, bet]]}, sort_keys=False, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(candidate)
    tmp.replace(path)
    return path


def _appended(text: str, bet: Bet) -> str | None:
    entry = yaml.safe_dump([bet.as_yaml()], sort_keys=False, allow_unicode=True, default_flow_style=False)
    if not text.strip():
        return "bets:\n" + _indent(entry, 2)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode) or len(root.value) != 1:
        return None
    _, entries = root.value[0]
    if isinstance(entries, yaml.SequenceNode) and entries.value and not entries.flow_style:
        dash = max(entries.value[0].start_mark.column - 2, 0)
        return text.rstrip("\n") + "\n" + _indent(entry, dash)
    if isinstance(entries, yaml.ScalarNode) and entries.value in ("", "~", "null"):
        return None
    return None


def _indent(block: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in block.splitlines(keepends=True))


# --- `segflow bets` ------------------------------------------------------------------------------------------------

def add_cli_parser(subparsers) -> None:
    """`segflow bets add|list`, registered by cli.py."""
    from segflow_pipeline import config

    bets = subparsers.add_parser("bets", help="initiatives whose effect on MRR is measured (marts.bet_impact)")
    actions = bets.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the bets in the bets file")
    add = actions.add_parser("add", help="validate a bet and append it to the bets file",
                             description=f"Appends a bet to {config.DEFAULT_BETS_FILE} (or SEGFLOW_BETS_FILE).")
    add.add_argument("name", help="a unique name, e.g. annual-plan-discount")
    add.add_argument("--start", required=True, help="first day the bet is live, YYYY-MM-DD (UTC)")
    add.add_argument("--end", default=None, help="last day, YYYY-MM-DD (optional)")
    segment = add.add_mutually_exclusive_group()
    segment.add_argument("--product", default=None, help="measure this product's MRR only (prod_...)")
    segment.add_argument("--price", default=None, help="measure this price's MRR only (price_...)")
    add.add_argument("--note", default=None, help="what the bet is (optional)")


def run_cli(args, out=None) -> int:
    """Runs `segflow bets ...`; a BetsError propagates to cli.py, which prints it and exits 2."""
    import sys

    from segflow_pipeline import config

    out = out or sys.stdout
    path = config.bets_file()
    if args.action == "list":
        bets = load_bets(path)
        print(f"# {path}" + ("" if path.exists() else " (no file yet: `segflow bets add` creates it)"), file=out)
        for b in bets:
            print(f"{b.name}\tstart={b.start}\tend={b.end or ''}\t{b.segment}" + (f"\t{b.note}" if b.note else ""),
                  file=out)
        return 0
    bet = make_bet(args.name, args.start, args.end, args.product, args.price, args.note, where="segflow bets add")
    add_bet(path, bet)
    print(f"added bet {bet.name!r} ({bet.segment}, from {bet.start}) to {path}", file=out)
    return 0
