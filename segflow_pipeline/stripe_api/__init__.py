"""Stripe access without Dagster: API keys, the GET-only client, Stripe objects -> rows."""
