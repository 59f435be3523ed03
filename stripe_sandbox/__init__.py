"""A local fake of Stripe's read API with a seeded, realistic SaaS account, for tests, demos and benchmarks.

`account.build_account` generates the account (customers, products, prices, coupons, subscriptions with their
history, invoices and lines, events); `server.EmulatorServer` serves one or more accounts over HTTP on 127.0.0.1
with Stripe's paging, filters, errors and rate limits, plus fault injection. The pipeline reaches it only over
HTTP (set STRIPE_API_BASE to `server.url`); nothing here imports the rest of the project.
"""
