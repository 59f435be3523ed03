"""One object listed twice: an identical copy is dropped, two different versions are resolved by the stated rule
(the later `created` wins; with the same `created`, the version from the request that started after the other's
answer arrived; otherwise the sync fails, naming the object) and counted in the sync report. The same input gives
the same tables on every run. Before the fix the copy staged first won, so the same input gave different MRR totals
from run to run, without a word."""

from __future__ import annotations

import copy

import duckdb
import orjson
import pytest

from stripe_sandbox.server import EmulatorServer
from segflow_pipeline.stripe_api.client import StripeReader
from segflow_pipeline.resources.raw_sync import sync_account
from segflow_pipeline.warehouse import raw
from segflow_pipeline_tests.support.reliability import FakeStripe, Request, table_rows


def pick(account) -> tuple[dict, dict, str]:
    """(T, X, A): T gets a second, different version, X an identical copy, both listed beside subscription A."""
    subs = [orjson.loads(account.encoded("subscriptions", i)) for i in range(len(account.subs))]
    active = [s for s in subs if s["status"] == "active" and s["items"]["data"]
              and not s["items"]["has_more"] and s["items"]["data"][0].get("quantity")]
    return active[0], active[1], active[2]["id"]


def duplicating(t_changed: dict, x: dict, anchor: str):
    def answer(fake: FakeStripe, request: Request):
        status, body, ctype = fake.forward(request)
        if request.path != "/v1/subscriptions" or status != 200:
            return status, body, ctype
        page = orjson.loads(body)
        ids = [s["id"] for s in page["data"]]
        if anchor in ids:  # the page listing A: slip the other two in before it (A's page goes on after A)
            at = ids.index(anchor)
            page["data"][at:at] = [t_changed, copy.deepcopy(x)]
        return status, orjson.dumps(page), ctype
    return answer


@pytest.mark.slow
def test_duplicates_are_dropped_or_resolved_by_the_rule_the_same_way_every_run(reference):
    t, x, anchor = pick(reference.account)
    newer = copy.deepcopy(t)
    newer["created"] = t["created"] + 1  # Stripe would never change `created`: the later one wins all the same
    newer["items"]["data"][0]["quantity"] = t["items"]["data"][0]["quantity"] + 5
    runs = []
    with EmulatorServer({reference.key: reference.account}) as emulator, \
            FakeStripe(duplicating(newer, x, anchor), upstream=emulator.url) as fake:
        for _ in range(3):
            con = duckdb.connect()
            raw.ensure_tables(con)
            reader = StripeReader(reference.key, api_base=fake.url, max_requests_per_second=500)
            report = sync_account(reader, con, mode="full")
            runs.append((report, {table: table_rows(con, "stripe", table) for table in
                                  ("subscriptions", "subscription_items", "discounts")}))
            con.close()
    item = t["items"]["data"][0]["id"]
    quantity = raw.TABLES["subscription_items"].names.index("quantity")
    for report, tables in runs:
        # The later version of T won (its item's quantity), on every run; X and T once each.
        items = {row[1]: row for row in tables["subscription_items"]}
        assert items[item][quantity] == newer["items"]["data"][0]["quantity"]
        ids = [row[1] for row in tables["subscriptions"]]
        assert ids.count(t["id"]) == 1 and ids.count(x["id"]) == 1
        assert tables == runs[0][1]  # the same tables on every run
        # Counted and said.
        subscriptions = report.tables["subscriptions"]
        assert subscriptions["duplicates_resolved"] == 1 and subscriptions["duplicates_dropped"] == 1
        assert report.tables["subscription_items"]["duplicates_dropped"] == len(x["items"]["data"])
        assert any(t["id"] in w and "two versions" in w for w in report.warnings), report.warnings
