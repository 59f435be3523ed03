"""A local fake of Stripe's read API with a seeded, realistic SaaS account, for tests, demos and benchmarks.

`account.build_account` generates the account (customers, products, prices, coupons, subscriptions with their
history, invoices and lines, events); `server.EmulatorServer` serves one or more accounts over HTTP on 127.0.0.1
with Stripe's paging, filters, errors and rate limits, plus fault injection. Clients reach it only over HTTP (set
STRIPE_API_BASE to `server.url`); it imports nothing of segflow_pipeline.

Modules, from the data up:
- `_time` (billing-period calendar), `catalog` (the price book and Stripe's price arithmetic),
  `records` (ids and the compact records), `listing` (Stripe's list order and cursor paging);
- `plans` (each subscription's scenario), `simulation` (a subscription's life), `invoicing` (its invoices and the
  events), `live` (changes after the build, for `SandboxAccount.mutate`);
- `objects` and `billing_objects` (Stripe's JSON shapes), `account` (the store: records, indexes, encoded cache);
- `router` (one GET -> bytes, parameters and errors), `server` (HTTP, keys, faults, statistics).
"""
