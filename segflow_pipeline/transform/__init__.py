"""Pure Polars transforms: frames in, frames out; no Dagster, no DuckDB, no I/O (docs/mrr.md is the definition).

Following one subscription through MRR, in the order the code runs (`mrr.mrr_run`, then
`intervals.subscription_mrr_intervals`, one call per step):

 1. `inputs.py`      the `stripe.*` frames conformed to the input schema the transform owns (`INPUT_SCHEMAS`);
                     `days.py` is the time model every step shares (end-of-day state, half-open day ranges).
 2. `events.py`      its `customer.subscription.*` events parsed; the days its event log covers (the event era).
 3. `lifecycle.py`   when it counts at all: status, trial, cancellation, unpaid, paused (section 2).
 4. `history.py`     which items (price, quantity) it had on which day: events, then invoice lines, then its
                     current items (section 5).
 5. `pricing.py`     what each item is worth per billing period, exactly, and its monthly factor (section 3).
 6. `discounts.py`   which coupons reduce it on which days (section 4).
 7. `snapshots.py`   what earlier runs recorded for it, the most trusted source of the past (section 5, rule 1).
 8. `intervals.py`   all of the above on one exact denominator: its MRR as day ranges of constant value.
 9. `daily.py`       its customer's MRR per day rounded half-up to the cent, the movements, `metrics.mrr_daily`.
10. `invariants.py`, `schemas.py`, `live.py`   what must hold before anything is written: movements reconcile,
                     no gaps, the Pandera models, and today's value recomputed from the current objects alone.
`unusable.py` says which input rows were left out and why; `money.py` and `currency.py` are the exact arithmetic
and currency exponents the steps use. Beside MRR: `reporting_currency.py`, `forecast.py`, `bet_impact.py`,
`drivers.py` build on `metrics.mrr_daily`.
"""
