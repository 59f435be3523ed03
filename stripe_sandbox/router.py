"""How the emulator answers one authenticated GET: the routes, Stripe's query parameters (paging, `created[...]`,
`expand[]` with its 4-level limit, each list's filters) and Stripe's error envelope.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from stripe_sandbox.account import SandboxAccount
from stripe_sandbox.listing import Table, page
from stripe_sandbox.records import EVENT_WINDOW_S

if TYPE_CHECKING:
    from stripe_sandbox.server import EmulatorServer

MAX_EXPAND_DEPTH = 4
SUB_STATUSES = ("active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired", "trialing",
                "paused", "all", "ended")
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
PAGING = {"limit", "starting_after", "ending_before", "expand"}

# Query parameters Stripe accepts per list endpoint (others get Stripe's "Received unknown parameter" 400).
LIST_PARAMS: dict[str, set[str]] = {
    "subscriptions": PAGING | {"status", "customer", "customer_account", "price", "created", "collection_method",
                               "current_period_end", "current_period_start", "test_clock", "automatic_tax"},
    "subscription_items": PAGING | {"subscription"},
    "invoices": PAGING | {"subscription", "customer", "customer_account", "status", "created", "collection_method",
                          "due_date"},
    "lines": PAGING,
    "customers": PAGING | {"created", "email", "test_clock"},
    "prices": PAGING | {"active", "currency", "product", "type", "created", "lookup_keys", "recurring"},
    "products": PAGING | {"active", "created", "ids", "shippable", "url"},
    "coupons": PAGING | {"created"},
    "events": PAGING | {"created", "type", "types", "delivery_success"},
    "invoiceitems": PAGING | {"created", "customer", "customer_account", "invoice", "pending"},
}

# Expandable properties per object kind: those rendered expanded, and those accepted but left as they are
# (null in this account, or already embedded objects).
EXPAND_SUPPORTED: dict[str, set[str]] = {
    "subscriptions": {"customer", "latest_invoice", "discounts", "items.data.discounts", "items.data.price.tiers",
                      "items.data.price.product"},
    "subscription_items": {"discounts", "price.tiers", "price.product"},
    "invoices": {"customer", "discounts", "parent.subscription_details.subscription", "lines.data.discounts"},
    "lines": {"discounts"},
    "customers": {"discount.source.coupon"},
    "prices": {"tiers", "product"},
    "products": {"default_price"},
    "coupons": set(),
    "events": set(),
    "invoiceitems": set(),
}
EXPAND_ACCEPTED: dict[str, set[str]] = {
    "subscriptions": {"items", "items.data.price", "items.data.plan", "default_payment_method", "default_source",
                      "pending_setup_intent", "schedule", "test_clock", "application", "on_behalf_of",
                      "transfer_data.destination", "latest_invoice.payment_intent", "customer_account"},
    "subscription_items": {"price"},
    "invoices": {"lines", "default_payment_method", "default_source", "test_clock", "on_behalf_of", "application",
                 "account_tax_ids", "latest_revision", "from_invoice.invoice", "total_discount_amounts.discount",
                 "lines.data.pricing.price_details.price", "customer_tax_ids", "payments"},
    "lines": {"pricing.price_details.price", "discount_amounts.discount"},
    "customers": {"default_source", "invoice_settings.default_payment_method", "test_clock", "tax", "sources",
                  "subscriptions", "cash_balance", "invoice_credit_balance", "tax_ids"},
    "prices": {"currency_options", "currency_options.tiers"},
    "products": {"tax_code"},
    "coupons": {"applies_to", "currency_options"},
    "events": set(),
    "invoiceitems": {"customer", "invoice", "discounts", "parent.subscription_details.subscription"},
}
SUBSCRIPTION_PERMISSION = "rak_subscription_read"
PERMISSION_OF = {"subscriptions": SUBSCRIPTION_PERMISSION, "subscription_items": SUBSCRIPTION_PERMISSION}


class ApiError(Exception):
    """An error answered with Stripe's envelope `{"error": {...}}`."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> bytes:
        err: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        if self.status in (400, 401, 402, 403, 404, 429):
            err["request_log_url"] = "https://dashboard.stripe.com/test/logs"
        return orjson.dumps({"error": err})


def mask_key(key: str) -> str:
    """Stripe's masking in error messages: the mode prefix, stars for the hidden part, the last four characters."""
    m = re.match(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", key)
    if not m:
        return "*" * max(0, len(key) - 4) + key[-4:]
    prefix, rest = m.groups()
    return prefix + "*" * max(0, len(rest) - 4) + rest[-4:]


class _Params:
    """Stripe-style query parameters: `expand[]=a`, `expand[0]=a`, `created[gte]=1`, `types[]=x`."""

    def __init__(self, query: str) -> None:
        self.scalars: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.dicts: dict[str, dict[str, str]] = {}
        for raw_key, value in parse_qsl(query, keep_blank_values=True):
            if "[" in raw_key and raw_key.endswith("]"):
                name, _, sub = raw_key[:-1].partition("[")
                if sub == "" or sub.isdigit():
                    self.lists.setdefault(name, []).append(value)
                else:
                    self.dicts.setdefault(name, {})[sub] = value
            else:
                self.scalars[raw_key] = value

    def names(self) -> set[str]:
        return set(self.scalars) | set(self.lists) | set(self.dicts)

    def get(self, name: str) -> str | None:
        return self.scalars.get(name)


def _int(value: str, param: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid integer: {value}", param=param) from None


class Router:
    """Maps one authenticated GET to the account's data."""

    def __init__(self, server: EmulatorServer, account: SandboxAccount, key: str) -> None:
        self.server, self.a, self.key = server, account, key

    def route(self, target: str) -> bytes:
        split = urlsplit(target)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        params = _Params(split.query)
        if len(parts) < 2 or parts[0] != "v1":
            raise self._unrecognized(target)
        resource = parts[1]
        self._check_permission(resource)
        if len(parts) == 2:
            if resource == "account":
                return orjson.dumps(self.a.account_dict())
            if resource == "balance":
                return orjson.dumps(self.a.balance_dict())
            if resource in ("subscriptions", "invoices", "customers", "prices", "products", "coupons", "events",
                            "invoiceitems"):
                return self.list_table(resource, params)
            if resource == "subscription_items":
                return self.list_items(params)
        elif len(parts) == 3 and resource in ("subscriptions", "invoices", "customers", "prices", "products",
                                              "coupons", "events", "invoiceitems"):
            return self.retrieve(resource, parts[2], params)
        elif len(parts) == 3 and resource == "subscription_items":
            return self.retrieve_item(parts[2], params)
        elif len(parts) == 3 and resource == "accounts":
            if parts[2] == self.a.account_id:
                return orjson.dumps(self.a.account_dict())
            raise ApiError(404, f"No such account: '{parts[2]}'", code="resource_missing", param="account")
        elif len(parts) == 4 and resource == "invoices" and parts[3] == "lines":
            return self.list_lines(parts[2], params)
        raise self._unrecognized(target)

    @staticmethod
    def _unrecognized(target: str) -> ApiError:
        return ApiError(404, f"Unrecognized request URL (GET: {target.split('?', 1)[0]}). Please see "
                        "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def _check_permission(self, resource: str) -> None:
        needed = PERMISSION_OF.get(resource)
        if needed and needed in self.server.missing_permissions.get(self.key, ()):
            raise ApiError(
                403,
                f"The provided key '{mask_key(self.key)}' does not have the required permissions for this endpoint "
                f"on account '{self.a.account_id}'. Having the '{needed}' permission would allow this request to "
                "continue.",
                code="more_permissions_required",
            )

    # ------------------------------------------------------------------ params
    @staticmethod
    def _check_names(params: _Params, allowed: set[str]) -> None:
        for name in sorted(params.names()):
            if name not in allowed:
                raise ApiError(400, f"Received unknown parameter: {name}", param=name)

    @staticmethod
    def _variant(kind: str, params: _Params, in_list: bool) -> tuple[str, ...]:
        out: set[str] = set()
        for i, path in enumerate(params.lists.get("expand", []) + ([params.scalars["expand"]]
                                                                   if "expand" in params.scalars else [])):
            parts = path.split(".")
            # The `data.` prefix of a list counts as a level: data.items.data.price is 4, .tiers would be 5.
            if len(parts) > MAX_EXPAND_DEPTH:
                raise ApiError(400, "You cannot expand more than 4 levels of a property. Property: " + path,
                               param=f"expand[{i}]")
            if in_list:
                if parts[0] != "data" or len(parts) < 2:
                    raise ApiError(400, f"This property cannot be expanded ({path}). You may want to try expanding "
                                   f"'data.{path}' instead.", param=f"expand[{i}]")
                parts = parts[1:]
            rel = ".".join(parts)
            if rel in EXPAND_SUPPORTED[kind]:
                out.add(rel)
            elif rel not in EXPAND_ACCEPTED[kind]:
                raise ApiError(400, f"This property cannot be expanded ({rel}).", param=f"expand[{i}]")
        return tuple(sorted(out))

    @staticmethod
    def _paging(params: _Params) -> tuple[int, str | None, str | None]:
        raw = params.get("limit")
        limit = 10
        if raw is not None:
            limit = _int(raw, "limit")
            if limit < 1:
                raise ApiError(400, "This value must be greater than or equal to 1.", param="limit")
            if limit > 100:
                raise ApiError(400, "This value must be less than or equal to 100.", param="limit")
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise ApiError(400, "You may only specify one of these parameters: ending_before, starting_after.")
        if after == "" or before == "":
            raise ApiError(400, "Invalid string: an empty string is not a valid cursor.",
                           param="starting_after" if after == "" else "ending_before")
        return limit, after, before

    @staticmethod
    def _created(params: _Params) -> tuple[int | None, int | None, int | None, int | None]:
        gt = gte = lt = lte = None
        if "created" in params.scalars:
            v = _int(params.scalars["created"], "created")
            gte = lte = v
        for op, value in params.dicts.get("created", {}).items():
            if op not in ("gt", "gte", "lt", "lte"):
                raise ApiError(400, f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
            v = _int(value, f"created[{op}]")
            if op == "gt":
                gt = v
            elif op == "gte":
                gte = v if gte is None else max(gte, v)
            elif op == "lt":
                lt = v
            else:
                lte = v if lte is None else min(lte, v)
        return gt, gte, lt, lte

    # ------------------------------------------------------------------ lists
    def list_table(self, resource: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, LIST_PARAMS[resource])
        limit, after, before = self._paging(params)
        variant = self._variant(resource, params, in_list=True)
        gt, gte, lt, lte = self._created(params)
        if resource == "events":
            # Stripe only keeps the last 30 days of events.
            floor = a.now - EVENT_WINDOW_S
            gte = floor if gte is None else max(gte, floor)
        table: Table = a.tables[resource]
        lo, hi = table.created_range(gt, gte, lt, lte)
        if after is not None:
            lo = max(lo, self._cursor(table, resource, after, "starting_after") + 1)
        if before is not None:
            hi = min(hi, self._cursor(table, resource, before, "ending_before"))
        candidates, predicate = self._filters(resource, params, table)
        positions, has_more = page(candidates, lo, hi, limit, before is not None, predicate, total=len(table))
        rows = table.rows
        encoded = a.encoded
        data = b",".join([encoded(resource, rows[p], variant) for p in positions])
        return b'{"object":"list","data":[%s],"has_more":%s,"url":"/v1/%s"}' % (
            data, b"true" if has_more else b"false", resource.encode())

    def _cursor(self, table: Table, resource: str, obj_id: str, param: str) -> int:
        pos = table.pos_of.get(obj_id)
        if pos is None:
            noun = {"subscriptions": "subscription", "invoices": "invoice", "customers": "customer",
                    "prices": "price", "products": "product", "coupons": "coupon", "events": "event",
                    "invoiceitems": "invoiceitem"}[resource]
            raise ApiError(400, f"No such {noun}: '{obj_id}'", code="resource_missing", param=param)
        return pos

    def _filters(self, resource: str, params: _Params, table: Table) -> tuple[Any, Any]:
        """An ascending position index to scan (None: all) and a predicate for filters without an index."""
        a = self.a
        idx = table.indexes
        indexed: list[list[int]] = []
        preds: list[Any] = []
        rows = table.rows
        if resource == "subscriptions":
            status = params.get("status")
            if status is not None and status not in SUB_STATUSES:
                raise ApiError(400, f"Invalid status: must be one of {', '.join(SUB_STATUSES)}", param="status")
            if status is None:
                indexed.append(idx["default"].get(True, []))
            elif status == "ended":
                ended = sorted(idx["status"].get("canceled", []) + idx["status"].get("incomplete_expired", []))
                indexed.append(ended)
            elif status != "all":
                indexed.append(idx["status"].get(status, []))
            if params.get("customer") is not None:
                indexed.append(idx["customer"].get(params.get("customer"), []))
            price = params.get("price")
            if price is not None:
                pidx = a._price_pos.get(price, -1)
                subs = a.subs
                preds.append(lambda p: any(it.price == pidx for it in subs[rows[p]].versions[-1].items))
        elif resource == "invoices":
            for name in ("subscription", "customer", "status"):
                value = params.get(name)
                if value is not None:
                    if name == "status" and value not in INVOICE_STATUSES:
                        raise ApiError(400, f"Invalid status: must be one of {', '.join(INVOICE_STATUSES)}",
                                       param="status")
                    indexed.append(idx[name].get(value, []))
            if params.get("collection_method") not in (None, "charge_automatically"):
                indexed.append([])
        elif resource == "invoiceitems":
            pending = params.get("pending")
            if pending is not None:
                if pending not in ("true", "false"):
                    raise ApiError(400, "Invalid boolean: " + pending, param="pending")
                indexed.append(idx["pending"].get(pending == "true", []))
            for name in ("customer", "invoice"):
                if params.get(name) is not None:
                    indexed.append(idx[name].get(params.get(name), []))
        elif resource == "customers":
            if params.get("email") is not None:
                indexed.append(idx["email"].get(params.get("email"), []))
        elif resource == "prices":
            prices = a.prices
            for name in ("currency", "product", "type"):
                value = params.get(name)
                if value is not None:
                    attr = {"currency": "currency", "product": "product", "type": "type"}[name]
                    preds.append(lambda p, attr=attr, value=value: getattr(prices[rows[p]], attr) == value)
            active = params.get("active")
            if active is not None:
                want = active == "true"
                preds.append(lambda p: prices[rows[p]].active == want)
            keys = params.lists.get("lookup_keys")
            if keys:
                preds.append(lambda p: prices[rows[p]].lookup_key in keys)
            recurring = params.dicts.get("recurring", {})
            if "interval" in recurring:
                preds.append(lambda p: prices[rows[p]].interval == recurring["interval"])
            if "usage_type" in recurring:
                preds.append(lambda p: prices[rows[p]].usage_type == recurring["usage_type"])
        elif resource == "products":
            products = a.products
            active = params.get("active")
            if active is not None:
                want = active == "true"
                preds.append(lambda p: products[rows[p]].active == want)
            ids = params.lists.get("ids")
            if ids:
                preds.append(lambda p: products[rows[p]].id in ids)
        elif resource == "events":
            events = a.events
            types = list(params.lists.get("types", []))
            if params.get("type") is not None:
                if types:
                    raise ApiError(400, "You may only specify one of these parameters: type, types.")
                types = [params.get("type") or ""]
            if len(types) > 20:
                raise ApiError(400, "You may pass at most 20 types.", param="types")
            if types:
                if all("*" not in t for t in types):
                    merged: list[int] = []
                    for t in set(types):
                        merged.extend(idx["type"].get(t, []))
                    indexed.append(sorted(merged))
                else:
                    # `customer.subscription.*` style wildcards, as Stripe's type filter supports.
                    patterns = [re.compile(re.escape(t).replace(r"\*", "[^ ]*") + "$") for t in types]
                    preds.append(lambda p: any(pt.match(events[rows[p]].type) for pt in patterns))
        candidates: Any = None
        if indexed:
            indexed.sort(key=len)
            candidates = indexed[0]
            for other in indexed[1:]:
                members = set(other)
                preds.append(lambda p, members=members: p in members)
        predicate = None
        if len(preds) == 1:
            predicate = preds[0]
        elif preds:
            predicate = lambda p: all(f(p) for f in preds)  # noqa: E731
        return candidates, predicate

    def _fixed_page(self, ids: list[str], limit: int, after: str | None, before: str | None,
                    noun: str) -> tuple[range, bool]:
        """Paging over a list in its own fixed order (invoice lines, subscription items)."""
        lo, hi = 0, len(ids)
        if after is not None or before is not None:
            cursor = after if after is not None else before
            try:
                pos = ids.index(cursor)  # type: ignore[arg-type]
            except ValueError:
                raise ApiError(400, f"No such {noun}: '{cursor}'", code="resource_missing",
                               param="starting_after" if after is not None else "ending_before") from None
            if after is not None:
                lo = pos + 1
            else:
                hi = pos
        if before is not None:
            start = max(lo, hi - limit)
            return range(start, hi), start > lo
        end = min(hi, lo + limit)
        return range(lo, end), end < hi

    def list_lines(self, invoice_id: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, LIST_PARAMS["lines"])
        limit, after, before = self._paging(params)
        variant = self._variant("lines", params, in_list=True)
        ridx = a.lookup("invoices", invoice_id)
        if ridx is None:
            raise ApiError(404, f"No such invoice: '{invoice_id}'", code="resource_missing", param="id")
        inv = a.invoices[ridx]
        chosen, has_more = self._fixed_page([ln.id for ln in inv.lines], limit, after, before, "line item")
        data = b",".join(orjson.dumps(a.line_dict(inv, inv.lines[i], variant)) for i in chosen)
        return b'{"object":"list","data":[%s],"has_more":%s,"url":"/v1/invoices/%s/lines"}' % (
            data, b"true" if has_more else b"false", invoice_id.encode())

    def list_items(self, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, LIST_PARAMS["subscription_items"])
        sub_id = params.get("subscription")
        if not sub_id:
            raise ApiError(400, "Missing required param: subscription.", code="parameter_missing",
                           param="subscription")
        limit, after, before = self._paging(params)
        variant = self._variant("subscription_items", params, in_list=True)
        ridx = a.lookup("subscriptions", sub_id)
        if ridx is None:
            raise ApiError(400, f"No such subscription: '{sub_id}'", code="resource_missing", param="subscription")
        sub, state, period = a.subscription_items(ridx)
        chosen, has_more = self._fixed_page([it.id for it in state.items], limit, after, before,
                                            "subscription item")
        data = b",".join(orjson.dumps(a.item_dict(sub, state.items[i], period, variant, prefix="")) for i in chosen)
        return b'{"object":"list","data":[%s],"has_more":%s,"url":"/v1/subscription_items"}' % (
            data, b"true" if has_more else b"false")

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, resource: str, obj_id: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, {"expand"})
        variant = self._variant(resource, params, in_list=False)
        ridx = a.lookup(resource, obj_id)
        if (resource == "events" and ridx is not None and a.is_generated("events", ridx)
                and a.events[ridx].created < a.now - EVENT_WINDOW_S):
            ridx = None
        if ridx is None:
            noun = resource[:-1]
            raise ApiError(404, f"No such {noun}: '{obj_id}'", code="resource_missing", param="id")
        if resource == "products" and "default_price" in variant:
            d = a.product_dict(a.products[ridx])
            if d["default_price"]:
                d["default_price"] = a.price_dict(a.price_by_id(d["default_price"]))
            return orjson.dumps(d)
        return a.encoded(resource, ridx, variant)

    def retrieve_item(self, item_id: str, params: _Params) -> bytes:
        a = self.a
        self._check_names(params, {"expand"})
        variant = self._variant("subscription_items", params, in_list=False)
        owner = a.item_owner(item_id)
        if owner is None:
            raise ApiError(404, f"No such subscription item: '{item_id}'", code="resource_missing", param="id")
        sub, state, period = a.subscription_items(owner)
        item = next(it for it in state.items if it.id == item_id)
        return orjson.dumps(a.item_dict(sub, item, period, variant, prefix=""))
