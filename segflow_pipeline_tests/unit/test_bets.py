"""bets.py and `segflow bets`: a good file is read, a bad one fails with the file, the line and the reason, and
`segflow bets add` validates before it writes (bad date, duplicate name, unknown product format) and keeps the
file's own lines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from segflow_pipeline import bets, cli, config

GOOD = """\
# our initiatives
bets:
  - name: annual-discount
    start: 2026-03-01
    end: 2026-05-31
    product: prod_NffrFeUfNV2Hib
    note: two months free on yearly
  - name: "new pricing page"
    start: '2026-04-15'
    price: price_1MoBy5LkdIwHu7ix
"""


def test_a_good_file_is_read() -> None:
    assert bets.parse_bets(GOOD) == [
        bets.Bet("annual-discount", dt.date(2026, 3, 1), dt.date(2026, 5, 31), "prod_NffrFeUfNV2Hib", None,
                 "two months free on yearly"),
        bets.Bet("new pricing page", dt.date(2026, 4, 15), price="price_1MoBy5LkdIwHu7ix"),
    ]
    assert bets.parse_bets("") == [] and bets.parse_bets("bets:\n") == []


@pytest.mark.parametrize(("text", "message"), [
    ("bets:\n  - name: a\n    start: 2026-02-30\n", "bets.yaml:2: start '2026-02-30' is not a date"),
    ("bets:\n  - name: a\n    start: 1 March\n", "bets.yaml:2: start '1 March' is not a date"),
    ("bets:\n  - name: a\n    start: 2026-03-01\n  - name: A\n    start: 2026-04-01\n",
     "bets.yaml:4: a bet named 'A' already exists (line 2)"),
    ("bets:\n  - name: a\n    start: 2026-03-01\n    product: shoes\n",
     "bets.yaml:2: product 'shoes' is not a Stripe product ID"),
    ("bets:\n  - name: a\n    start: 2026-03-01\n    price: prod_x\n", "bets.yaml:2: price 'prod_x' is not a Stripe"),
    ("bets:\n  - name: a\n    start: 2026-03-01\n    product: prod_x\n    price: price_x\n",
     "bets.yaml:2: give a product or a price, not both"),
    ("bets:\n  - name: a\n    start: 2026-03-01\n    end: 2026-02-01\n", "bets.yaml:2: end 2026-02-01 is before start"),
    ("bets:\n  - name: a\n    started: 2026-03-01\n", "bets.yaml:3: unknown field 'started'"),
    ("bets:\n  - name: a\n", "bets.yaml:2: the bet has no start"),
    ("bets:\n  - start: 2026-03-01\n", "bets.yaml:2: the bet has no name"),
    ("bets:\n  - name: a\n    start: [2026-03-01]\n", "bets.yaml:3: start must be a single value"),
    ("bets:\n  - name: a\n    start: 2026-03-01\n  oops\n", "bets.yaml:5: not valid YAML (could not find expected ':', while scanning a simple key on line 4)"),
    ("bets: yes please\n", "bets.yaml:1: 'bets:' must be a list"),
    ("wagers:\n  - name: a\n", "bets.yaml:1: unknown key 'wagers'"),
    ("- name: a\n", "bets.yaml:1: expected a top-level 'bets:' list"),
], ids=["impossible_date", "not_iso", "duplicate_name", "product_format", "price_format", "both_filters",
        "end_before_start", "unknown_field", "no_start", "no_name", "list_value", "broken_yaml", "not_a_list",
        "unknown_top_key", "top_level_list"])
def test_a_bad_file_fails_with_the_line_and_the_reason(text: str, message: str) -> None:
    with pytest.raises(bets.BetsError) as failure:
        bets.parse_bets(text, where="bets.yaml")
    assert str(failure.value).startswith(message)


def test_add_appends_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "bets.yaml"
    path.write_text(GOOD)
    bets.add_bet(path, bets.make_bet("referral program", "2026-06-01", note="give 1 month, get 1 month"))
    text = path.read_text()
    assert text.startswith(GOOD) and "# our initiatives" in text
    assert [b.name for b in bets.load_bets(path)] == ["annual-discount", "new pricing page", "referral program"]
    assert bets.load_bets(path)[-1].note == "give 1 month, get 1 month"


def test_add_creates_the_file_and_rewrites_a_flow_style_list(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "bets.yaml"
    bets.add_bet(path, bets.make_bet("first", "2026-01-01"))
    assert bets.load_bets(path) == [bets.Bet("first", dt.date(2026, 1, 1))]
    flow = tmp_path / "flow.yaml"
    flow.write_text("bets: [{name: a, start: 2026-01-01}]\n")
    bets.add_bet(flow, bets.make_bet("b", "2026-02-01", product="prod_B2"))
    assert [(b.name, b.product) for b in bets.load_bets(flow)] == [("a", None), ("b", "prod_B2")]


def test_add_refuses_a_broken_file_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "bets.yaml"
    path.write_text("bets:\n  - name: a\n    start: someday\n")
    with pytest.raises(bets.BetsError, match=r"bets.yaml:2: start 'someday' is not a date"):
        bets.add_bet(path, bets.make_bet("b", "2026-01-01"))
    assert path.read_text() == "bets:\n  - name: a\n    start: someday\n"


def test_the_bets_file_comes_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SEGFLOW_BETS_FILE", raising=False)
    assert config.bets_file() == Path("bets.yaml")
    monkeypatch.setenv("SEGFLOW_BETS_FILE", str(tmp_path / "mine.yaml"))
    assert config.bets_file() == tmp_path / "mine.yaml"
    assert config.bets_file({}) == Path("bets.yaml")


# --- the command -----------------------------------------------------------------------------------------------------

@pytest.fixture
def bets_file(monkeypatch, tmp_path: Path) -> Path:
    path = tmp_path / "bets.yaml"
    monkeypatch.setenv("SEGFLOW_BETS_FILE", str(path))
    return path


def test_cli_add_writes_a_valid_bet(bets_file: Path, capsys) -> None:
    code = cli.main(["bets", "add", "annual-discount", "--start", "2026-03-01", "--end", "2026-05-31",
                     "--product", "prod_NffrFeUfNV2Hib", "--note", "2 months free"])
    assert code == 0
    assert "added bet 'annual-discount'" in capsys.readouterr().out
    assert bets.load_bets(bets_file) == [bets.Bet("annual-discount", dt.date(2026, 3, 1), dt.date(2026, 5, 31),
                                                  "prod_NffrFeUfNV2Hib", None, "2 months free")]
    assert cli.main(["bets", "list"]) == 0
    assert "annual-discount\tstart=2026-03-01" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["bets", "add", "x", "--start", "2026-13-01"], "start '2026-13-01' is not a date"),
    (["bets", "add", "x", "--start", "2026-03-01", "--end", "soon"], "end 'soon' is not a date"),
    (["bets", "add", "taken", "--start", "2026-03-01"], "a bet named 'taken' already exists"),
    (["bets", "add", "x", "--start", "2026-03-01", "--product", "Pro plan"], "product 'Pro plan' is not a Stripe "
                                                                             "product ID"),
    (["bets", "add", "x", "--start", "2026-03-01", "--price", "gold"], "price 'gold' is not a Stripe price ID"),
], ids=["bad_date", "bad_end", "duplicate_name", "unknown_product_format", "unknown_price_format"])
def test_cli_add_refuses_bad_input_and_writes_nothing(bets_file: Path, capsys, argv, message) -> None:
    bets_file.write_text("bets:\n  - name: taken\n    start: 2026-01-01\n")
    before = bets_file.read_text()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("segflow: ") and message in err
    assert bets_file.read_text() == before


def test_cli_add_takes_a_product_or_a_price_not_both(bets_file: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bets", "add", "x", "--start", "2026-03-01", "--product", "prod_a", "--price", "price_b"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not bets_file.exists()


def test_cli_list_names_the_broken_line(bets_file: Path, capsys) -> None:
    bets_file.write_text("bets:\n  - name: a\n    start: 2026-01-01\n  - name: b\n    start: 2026-01-01\n"
                         "    product: b\n")
    assert cli.main(["bets", "list"]) == 2
    assert f"{bets_file}:4: product 'b' is not a Stripe product ID" in capsys.readouterr().err
