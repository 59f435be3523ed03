"""segflow-pipeline: a Stripe account turned into a trustworthy daily MRR series in DuckDB."""
