"""Stripe objects → rows: Stripe's documented examples, older API shapes, and objects that must be quarantined."""

import copy
import datetime as dt
import json
from decimal import Decimal

import pytest

from segflow_pipeline.stripe_api import objects
from segflow_pipeline.raw_tables import TABLES
from segflow_pipeline_tests.support.paths import STRIPE_FIXTURES


@pytest.fixture(scope="module")
def stripe_examples() -> dict:
    return json.loads(STRIPE_FIXTURES.read_text())["resources"]


def example(stripe_examples: dict, name: str) -> dict:
    return copy.deepcopy(stripe_examples[name])


def only(rows: objects.Rows, table: str) -> dict:
    found = rows.tables[table].to_pylist()
    assert len(found) == 1, found
    return found[0]


def ts(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def test_every_table_matches_its_schema(stripe_examples):
    built = [
        objects.subscription_rows([example(stripe_examples, "subscription")], "acme"),
        objects.invoice_rows([example(stripe_examples, "invoice")], "acme"),
        objects.customer_rows([example(stripe_examples, "customer")], "acme"),
        objects.price_rows([example(stripe_examples, "price")], "acme"),
        objects.coupon_rows([example(stripe_examples, "coupon")], "acme"),
        objects.product_rows([example(stripe_examples, "product")], "acme"),
        objects.event_rows([example(stripe_examples, "event")], "acme"),
    ]
    for rows in built:
        assert rows.quarantined == 0
        for table, data in rows.tables.items():
            assert data.schema == TABLES[table]
            assert data.column("integration").to_pylist() == ["acme"] * data.num_rows


def test_basil_subscription_takes_its_period_from_items(stripe_examples):
    sub = example(stripe_examples, "subscription")
    item = sub["items"]["data"][0]
    second = {**copy.deepcopy(item), "id": "si_2", "current_period_start": 1_700_000_000,
              "current_period_end": 1_990_000_000}
    item.update(current_period_start=1_710_000_000, current_period_end=1_712_000_000)
    sub["items"]["data"].append(second)
    rows = objects.subscription_rows([sub], "default")
    row = only(rows, "subscriptions")
    assert row["current_period_start"] == ts(1_700_000_000)  # earliest start over items
    assert row["current_period_end"] == ts(1_990_000_000)    # latest end over items
    assert row["customer"] == "cus_QXg1o8vcGmoR32" and row["status"] == "active"
    assert row["pause_collection_behavior"] == "mark_uncollectible"
    assert row["created"] == ts(1234567890)
    assert json.loads(row["raw"])["id"] == sub["id"]
    items = rows.tables["subscription_items"].to_pylist()
    assert [i["id"] for i in items] == ["si_QXhVnC2h0Jczwc", "si_2"]
    assert {i["subscription"] for i in items} == {sub["id"]}
    assert items[0]["price"] == "price_1PgafmB7WZ01zgkW6dKueIc5" and items[0]["quantity"] == 1


def old_subscription() -> dict:
    """A subscription as API versions before 2025-03-31 (and before `currency` and `discounts`) return it."""
    return {
        "id": "sub_old", "object": "subscription", "customer": {"id": "cus_1", "object": "customer"},
        "status": "past_due", "created": 1_600_000_000, "start_date": 1_600_000_000,
        "current_period_start": 1_650_000_000, "current_period_end": 1_652_592_000,
        "cancel_at_period_end": False, "livemode": True, "pause_collection": None,
        "discount": {"object": "discount", "id": "di_legacy", "customer": "cus_1", "subscription": "sub_old",
                     "start": 1_600_000_000, "end": None,
                     "coupon": {"id": "SAVE20", "object": "coupon", "percent_off": 20}},
        "items": {"object": "list", "has_more": False, "data": [
            {"id": "si_old", "object": "subscription_item", "created": 1_600_000_000, "quantity": 3,
             "subscription": "sub_old",
             "plan": {"id": "plan_gold", "object": "plan", "currency": "eur", "amount": 1000}},
        ]},
    }


def test_old_subscription_shape():
    rows = objects.subscription_rows([old_subscription()], "default")
    row = only(rows, "subscriptions")
    assert row["current_period_start"] == ts(1_650_000_000)
    assert row["current_period_end"] == ts(1_652_592_000)
    assert row["currency"] == "eur"          # from the plan: old subscriptions had no currency
    assert row["customer"] == "cus_1"        # expanded customer → its id
    assert row["pause_collection_behavior"] is None
    assert only(rows, "subscription_items")["price"] == "plan_gold"
    discount = only(rows, "discounts")
    assert discount == {"integration": "default", "id": "di_legacy", "scope": "subscription", "target": "sub_old",
                        "customer": "cus_1", "subscription": "sub_old", "subscription_item": None,
                        "coupon": "SAVE20", "start": ts(1_600_000_000), "end": None}


@pytest.mark.parametrize("discounts, coupons", [
    pytest.param([{"id": "di_1", "object": "discount", "source": {"type": "coupon", "coupon": "C1"}, "start": 1}],
                 {"di_1": "C1"}, id="source-coupon-id"),
    pytest.param([{"id": "di_1", "object": "discount", "source": {"type": "coupon",
                                                                  "coupon": {"id": "C1", "object": "coupon"}}}],
                 {"di_1": "C1"}, id="source-coupon-object"),
    pytest.param([{"id": "di_1", "object": "discount", "coupon": {"id": "C1", "object": "coupon"}}],
                 {"di_1": "C1"}, id="coupon-object-old"),
    pytest.param(["di_1"], {"di_1": None}, id="unexpanded-id"),
    pytest.param(["di_legacy", "di_2"], {"di_legacy": "SAVE20", "di_2": None}, id="ids-plus-legacy-discount-once"),
])
def test_subscription_discount_shapes(discounts, coupons):
    sub = old_subscription()
    sub["discounts"] = discounts
    if "di_legacy" not in coupons:
        del sub["discount"]
    rows = objects.subscription_rows([sub], "default")
    found = {d["id"]: d["coupon"] for d in rows.tables["discounts"].to_pylist()}
    assert found == coupons


def test_item_discounts_are_scoped_to_the_item():
    sub = old_subscription()
    sub["items"]["data"][0]["discounts"] = [{"id": "di_item", "object": "discount",
                                             "source": {"type": "coupon", "coupon": "ITEM10"}}]
    rows = objects.subscription_rows([sub], "default")
    item_discount = [d for d in rows.tables["discounts"].to_pylist() if d["scope"] == "subscription_item"]
    assert item_discount == [{"integration": "default", "id": "di_item", "scope": "subscription_item",
                              "target": "si_old", "customer": None, "subscription": "sub_old",
                              "subscription_item": "si_old", "coupon": "ITEM10", "start": None, "end": None}]


def test_paged_subscription_items_take_the_subscription_from_context(stripe_examples):
    item = example(stripe_examples, "subscription_item")
    del item["subscription"]
    rows = objects.subscription_item_rows([item], "default", subscription="sub_parent")
    assert only(rows, "subscription_items")["subscription"] == "sub_parent"


def test_basil_invoice_and_line(stripe_examples):
    invoice = example(stripe_examples, "invoice")
    invoice["status_transitions"]["paid_at"] = 1_700_000_100
    line = invoice["lines"]["data"][0]
    line["parent"] = {"type": "subscription_item_details", "invoice_item_details": None,
                      "subscription_item_details": {"subscription": "sub_9", "subscription_item": "si_9",
                                                    "proration": False, "invoice_item": None}}
    line["pricing"] = {"type": "price_details", "price_details": {"price": "price_9", "product": "prod_9"},
                       "unit_amount_decimal": "1000"}
    rows = objects.invoice_rows([invoice], "default")
    row = only(rows, "invoices")
    assert row["subscription"] == "subscription"  # parent.subscription_details.subscription
    assert row["paid_at"] == ts(1_700_000_100)
    assert (row["subtotal"], row["total"], row["amount_due"], row["amount_paid"]) == (1000, 1000, 1000, 0)
    lrow = only(rows, "invoice_lines")
    assert lrow["type"] == "subscription"
    assert (lrow["subscription"], lrow["subscription_item"], lrow["price"], lrow["proration"]) == (
        "sub_9", "si_9", "price_9", False)
    assert lrow["invoice"] == invoice["id"] and lrow["customer"] == "cus_QXg1o8vcGmoR32"
    assert (lrow["period_start"], lrow["amount"], lrow["currency"]) == (ts(1721954054), 1000, "usd")


def test_invoice_item_line_in_basil_shape(stripe_examples):
    rows = objects.invoice_rows([example(stripe_examples, "invoice")], "default")
    lrow = only(rows, "invoice_lines")
    assert lrow["type"] == "invoiceitem"  # parent.type = invoice_item_details
    assert lrow["proration"] is True


def test_old_invoice_and_line_shape():
    invoice = {
        "id": "in_old", "object": "invoice", "customer": "cus_1", "subscription": "sub_old", "status": "paid",
        "currency": "jpy", "created": 1_600_000_000, "total": 5000, "subtotal": 5000, "amount_due": 5000,
        "amount_paid": 5000, "status_transitions": {"paid_at": 1_600_000_500},
        "lines": {"object": "list", "has_more": True, "url": "/v1/invoices/in_old/lines", "data": [
            {"id": "sli_1", "object": "line_item", "type": "subscription", "subscription": "sub_old",
             "subscription_item": "si_old", "proration": True, "amount": 5000, "currency": "jpy", "quantity": 1,
             "price": {"id": "price_old", "object": "price"}, "period": {"start": 1, "end": 2}},
        ]},
    }
    rows = objects.invoice_rows([invoice], "default")
    assert only(rows, "invoices")["subscription"] == "sub_old"
    lrow = only(rows, "invoice_lines")
    assert (lrow["type"], lrow["subscription"], lrow["subscription_item"], lrow["price"], lrow["proration"]) == (
        "subscription", "sub_old", "si_old", "price_old", True)
    assert lrow["invoice"] == "in_old" and lrow["customer"] == "cus_1"


def test_paged_lines_get_invoice_and_customer_from_context(stripe_examples):
    line = example(stripe_examples, "line_item")
    del line["invoice"]
    rows = objects.invoice_line_rows([line, {**line, "id": "il_2"}], "default", invoice="in_1", customer="cus_1")
    got = rows.tables["invoice_lines"].to_pylist()
    assert [(r["id"], r["invoice"], r["customer"]) for r in got] == [
        ("il_tmp_1Pgc6sB7WZ01zgkWrG16hkdl", "in_1", "cus_1"), ("il_2", "in_1", "cus_1")]


def test_tiered_price_with_expanded_tiers():
    price = {"id": "price_t", "object": "price", "currency": "usd", "billing_scheme": "tiered", "tiers_mode": "volume",
             "type": "recurring", "active": True, "created": 1, "product": {"id": "prod_1", "object": "product"},
             "unit_amount": None, "unit_amount_decimal": None,
             "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
             "tiers": [{"up_to": 10, "unit_amount": 500, "unit_amount_decimal": "500", "flat_amount": None,
                        "flat_amount_decimal": None},
                       {"up_to": None, "unit_amount": None, "unit_amount_decimal": "412.3456789",
                        "flat_amount": 100, "flat_amount_decimal": "100"}]}
    rows = objects.price_rows([price], "default")
    row = only(rows, "prices")
    assert (row["product"], row["billing_scheme"], row["tiers_mode"]) == ("prod_1", "tiered", "volume")
    assert row["recurring_interval"] == "month" and row["unit_amount"] is None
    tiers = rows.tables["price_tiers"].to_pylist()
    assert [(t["tier_index"], t["up_to"], t["unit_amount_decimal"], t["flat_amount"]) for t in tiers] == [
        (0, 10, Decimal("500"), None), (1, None, Decimal("412.3456789"), 100)]


def test_price_without_expanded_tiers_has_no_tier_rows(stripe_examples):
    rows = objects.price_rows([example(stripe_examples, "price")], "default")
    row = only(rows, "prices")
    assert "price_tiers" not in rows.tables
    assert row["unit_amount_decimal"] == Decimal("2000")
    assert (row["transform_quantity_divide_by"], row["transform_quantity_round"]) == (1592560163, "down")


def test_plan_reads_as_a_price(stripe_examples):
    row = only(objects.price_rows([example(stripe_examples, "plan")], "default"), "prices")
    assert (row["type"], row["unit_amount"], row["recurring_interval"], row["recurring_usage_type"]) == (
        "recurring", 2000, "month", "licensed")


def test_coupon_percent_off_is_exact():
    row = only(objects.coupon_rows([{"id": "C", "object": "coupon", "percent_off": 33.33, "duration": "repeating",
                                     "duration_in_months": 3, "valid": True}], "default"), "coupons")
    assert row["percent_off"] == Decimal("33.33")


def test_customer_with_discount(stripe_examples):
    customer = example(stripe_examples, "customer")
    customer["discount"]["source"]["coupon"] = "VIP"
    rows = objects.customer_rows([customer], "default")
    assert only(rows, "customers")["deleted"] is False
    discount = only(rows, "discounts")
    assert (discount["scope"], discount["target"], discount["customer"], discount["coupon"]) == (
        "customer", customer["id"], customer["id"], "VIP")


@pytest.mark.parametrize("name, fn", [
    ("deleted_customer", objects.customer_rows), ("deleted_price", objects.price_rows),
    ("deleted_coupon", objects.coupon_rows), ("deleted_product", objects.product_rows),
])
def test_deleted_stubs_are_flagged(stripe_examples, name, fn):
    rows = fn([example(stripe_examples, name)], "default")
    (table,) = [t for t in rows.tables]
    assert rows.tables[table].column("deleted").to_pylist() == [True]


def test_event_row(stripe_examples):
    event = example(stripe_examples, "event")
    event["data"]["previous_attributes"] = {"amount": 1500}
    row = only(objects.event_rows([event], "default"), "events")
    assert (row["type"], row["object_type"], row["object_id"]) == ("plan.created", "plan",
                                                                   "price_1PgafmB7WZ01zgkW6dKueIc5")
    assert json.loads(row["previous_attributes"]) == {"amount": 1500}
    assert json.loads(row["data_object"])["amount"] == 2000


def broken(stripe_examples: dict, change) -> dict:
    obj = example(stripe_examples, "invoice")
    change(obj)
    return obj


@pytest.mark.parametrize("change, reason", [
    pytest.param(lambda o: o.pop("id"), "missing id", id="missing-id"),
    pytest.param(lambda o: o.update(id=""), "missing id", id="empty-id"),
    pytest.param(lambda o: o.update(currency=840), "invoices.currency: unexpected int 840", id="currency-int"),
    pytest.param(lambda o: o.update(total=10.5), "invoices.total: unexpected float 10.5", id="amount-float"),
    pytest.param(lambda o: o.update(livemode="no"), "invoices.livemode: unexpected str", id="bool-str"),
    pytest.param(lambda o: o.update(created="yesterday"), "invoices.created: unexpected str", id="created-str"),
    pytest.param(lambda o: o.update(lines=[42]), "not a JSON object (int)", id="line-not-object"),
    pytest.param(lambda o: o.update(status_transitions="paid"), "status_transitions: expected an object",
                 id="nested-not-object"),
    pytest.param(lambda o: o["lines"]["data"][0].update(currency=["usd"]),
                 "invoice_lines.currency: unexpected list", id="line-currency-list"),
    pytest.param(lambda o: o.update(customer=7), "expected an id or an object with an id", id="customer-int"),
])
def test_broken_objects_are_quarantined_and_the_page_kept(stripe_examples, change, reason):
    good = example(stripe_examples, "invoice")
    bad = broken(stripe_examples, change)
    other = {**example(stripe_examples, "invoice"), "id": "in_other"}
    other["lines"] = {"object": "list", "has_more": False, "data": []}
    rows = objects.invoice_rows([good, bad, other], "default")
    assert rows.tables["invoices"].column("id").to_pylist() == [good["id"], "in_other"]
    # The broken invoice's embedded lines are quarantined with it: no orphan lines.
    assert rows.tables["invoice_lines"].column("invoice").to_pylist() == [good["id"]]
    q = only(rows, "quarantine")
    assert q["object_type"] == "invoice" and reason in q["reason"]
    assert q["object_id"] == (bad.get("id") or None)
    assert isinstance(q["synced_at"], dt.datetime) and q["raw"]


def test_non_objects_in_a_page_are_quarantined():
    rows = objects.customer_rows([None, "cus_1", 3, {"id": "cus_ok", "object": "customer"}], "default")
    assert rows.tables["customers"].column("id").to_pylist() == ["cus_ok"]
    assert rows.quarantined == 3
    assert rows.tables["quarantine"].column("reason").to_pylist() == [
        "not a JSON object (NoneType)", "not a JSON object (str)", "not a JSON object (int)"]


def test_a_bad_item_quarantines_its_subscription_whole():
    sub = old_subscription()
    sub["items"]["data"][0]["quantity"] = "three"
    ok = {**old_subscription(), "id": "sub_ok"}
    ok["items"]["data"][0].update(id="si_ok", subscription="sub_ok")
    rows = objects.subscription_rows([sub, ok], "default")
    assert rows.tables["subscriptions"].column("id").to_pylist() == ["sub_ok"]
    assert rows.tables["subscription_items"].column("id").to_pylist() == ["si_ok"]
    assert only(rows, "quarantine")["reason"] == "subscription_items.quantity: unexpected str 'three'"
    assert rows.quarantined_ids == [("subscription", "sub_old")]


def test_empty_page_gives_no_tables():
    assert objects.subscription_rows([], "default").tables == {}


def expanded_invoices_page(stripe_examples, subscription: dict, customer: dict) -> tuple[bytes, dict]:
    invoice = example(stripe_examples, "invoice")
    invoice["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"metadata": None, "subscription": subscription["id"]}}
    invoice["customer"] = customer["id"]
    plain = copy.deepcopy(invoice)
    invoice["customer"] = customer
    invoice["parent"]["subscription_details"]["subscription"] = subscription
    body = json.dumps({"object": "list", "has_more": False, "data": [invoice]}).encode()
    return body, plain


def test_customers_and_subscriptions_expanded_in_invoices_become_their_own_rows(stripe_examples):
    subscription, customer = example(stripe_examples, "subscription"), example(stripe_examples, "customer")
    body, plain = expanded_invoices_page(stripe_examples, subscription, customer)
    page = objects.page_rows("invoices", body, "acme", {"expanded": True})
    assert page.embedded == {"customers": [customer["id"]], "subscriptions": [subscription["id"]]}
    # The invoice is stored as Stripe lists it unexpanded; the others as their own reads return them.
    assert page.rows.tables["invoices"].equals(objects.invoice_rows([plain], "acme").tables["invoices"])
    for kind, obj in (("customers", customer), ("subscriptions", subscription)):
        assert page.rows.tables[kind].drop(["raw"]).equals(
            objects.rows_of(kind, [obj], "acme").tables[kind].drop(["raw"]))
        assert json.loads(only(page.rows, kind)["raw"]) == obj
    assert page.rows.tables["subscription_items"].num_rows == len(subscription["items"]["data"])
    # Without the flag nothing is taken apart (the full sync never asks for expansions).
    assert objects.page_rows("invoices", body, "acme").embedded == {}


@pytest.mark.parametrize("change", ["discount", "item_discount", "items_truncated", "deleted_customer"])
def test_expanded_objects_the_expansion_cannot_complete_are_left_to_a_read_by_id(stripe_examples, change):
    subscription, customer = example(stripe_examples, "subscription"), example(stripe_examples, "customer")
    if change == "discount":
        subscription["discounts"] = ["di_1"]  # its discounts are only expanded when read directly
    elif change == "item_discount":
        subscription["items"]["data"][0]["discounts"] = ["di_2"]
    elif change == "items_truncated":
        subscription["items"]["has_more"] = True
    else:
        customer = {"id": customer["id"], "object": "customer", "deleted": True}
    body, plain = expanded_invoices_page(stripe_examples, subscription, customer)
    page = objects.page_rows("invoices", body, "acme", {"expanded": True})
    taken = "customers" if change == "deleted_customer" else "subscriptions"
    assert taken not in page.embedded and taken not in page.rows.tables
    assert page.rows.tables["invoices"].equals(objects.invoice_rows([plain], "acme").tables["invoices"])
