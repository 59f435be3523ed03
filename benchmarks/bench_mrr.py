"""Speed and memory of the MRR transform against a naive DuckDB date-spine query. Prints figures, asserts none.

    python benchmarks/bench_mrr.py                        # 100k subscriptions over 3 years
    python benchmarks/bench_mrr.py --subscriptions 20000  # quicker
    python benchmarks/bench_mrr.py --no-naive-movements   # naive query without the customer × day movements

Synthetic account: subscriptions started over 3 years (monthly, every 3 months, yearly and weekly prices in usd,
eur, jpy), a share canceled, a share with a trial, a share with a 20 % forever coupon, and a share upgraded once
mid-period — the upgrade only visible in the invoice lines (monthly regular lines plus proration lines), as for
changes older than the 30 days of events.

Figures: wall time of `subscription_mrr_intervals` + `daily_mrr`; wall time of the naive query (every
subscription joined to every day of its life, exact integer MRR per customer and day rounded half-up, summed per
currency; movements from a customer × day spine); whether both give the same mrr and movements per
(currency, day); the time ratio; peak RSS of the process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segflow_pipeline.config import MrrOptions  # noqa: E402
from segflow_pipeline.raw_tables import TABLES  # noqa: E402
from segflow_pipeline.transform import live, mrr  # noqa: E402

AS_OF = dt.datetime(2025, 6, 30, 12, 0, 0)
TODAY = AS_OF.date()
DAYS = 3 * 365
INTERVALS = [("month", 1, 12), ("month", 3, 12), ("year", 1, 1), ("week", 1, 52)]  # (interval, count, month_num)
CURRENCIES = [("usd", 2), ("eur", 2), ("jpy", 0)]


def empty(table: str) -> pl.DataFrame:
    return pl.from_arrow(TABLES[table].empty_table())


def conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    schema = empty(table).schema
    return frame.with_columns(
        [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    ).select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def synthetic(n_subs: int, seed: int = 7) -> tuple[mrr.MrrInputs, dict[str, pl.DataFrame]]:
    """The transform's inputs, and the truth the generator knows (for the naive query)."""
    rng = np.random.default_rng(seed)
    # prices: for every interval × currency, 25 amounts
    price_rows = []
    for ci, (cur, exp) in enumerate(CURRENCIES):
        for ii, (interval, count, _) in enumerate(INTERVALS):
            for k in range(25):
                amount = int(rng.integers(5, 500)) * (10 ** exp) * (12 if interval == "year" else 1)
                price_rows.append({"id": f"price_{ci}_{ii}_{k}", "currency": cur, "recurring_interval": interval,
                                   "recurring_interval_count": count, "unit_amount": amount,
                                   "cur_i": ci, "int_i": ii})
    prices = pl.DataFrame(price_rows).with_columns(
        pl.lit("default").alias("integration"), pl.lit("recurring").alias("type"),
        pl.lit("per_unit").alias("billing_scheme"), pl.lit("licensed").alias("recurring_usage_type"),
        pl.col("unit_amount").cast(pl.Decimal(38, 12)).alias("unit_amount_decimal"),
    )

    n = n_subs
    start0 = AS_OF - dt.timedelta(days=DAYS)
    cur_i = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    int_i = rng.choice(4, size=n, p=[0.7, 0.1, 0.1, 0.1])
    old_k = rng.integers(0, 25, size=n)
    new_k = rng.integers(0, 25, size=n)
    start_s = rng.integers(0, DAYS * 86400 - 86400, size=n)
    life_s = rng.integers(86400, DAYS * 86400, size=n)
    canceled = rng.random(n) < 0.3
    trial = rng.random(n) < 0.1
    upgraded = rng.random(n) < 0.3
    coupon = rng.random(n) < 0.1
    quantity = rng.integers(1, 6, size=n)
    upgrade_s = rng.integers(2 * 86400, 200 * 86400, size=n)

    subs = pl.DataFrame({
        "id": [f"sub_{i}" for i in range(n)],
        "customer": [f"cus_{i}" for i in rng.integers(0, int(n * 0.6), size=n)],
        "cur_i": cur_i, "int_i": int_i, "old_k": old_k, "new_k": new_k, "quantity": quantity,
        "start_s": start_s, "life_s": life_s, "canceled": canceled, "trial": trial,
        "upgraded": upgraded, "coupon": coupon, "upgrade_s": upgrade_s,
    }).with_columns(
        (pl.lit(start0) + pl.duration(seconds=pl.col("start_s"))).alias("start_date"),
    ).with_columns(
        (pl.col("start_date") + pl.duration(seconds=pl.col("life_s"))).alias("end_ts"),
        pl.when(pl.col("trial")).then(pl.col("start_date") + pl.duration(days=14)).alias("trial_end"),
        (pl.col("start_date") + pl.duration(seconds=pl.col("upgrade_s"))).alias("upgrade_ts"),
    ).with_columns(
        # a cancellation after the run has not happened; an upgrade after the end never happened
        (pl.col("canceled") & (pl.col("end_ts") <= AS_OF)).alias("canceled"),
        (pl.col("upgraded") & (pl.col("upgrade_ts") <= AS_OF) & (pl.col("upgrade_ts") < pl.col("end_ts"))).alias("upgraded"),
    ).with_columns(
        (pl.col("upgraded") & ~(pl.col("canceled") & (pl.col("upgrade_ts") >= pl.col("end_ts")))).alias("upgraded"),
        pl.format("price_{}_{}_{}", "cur_i", "int_i", "old_k").alias("old_price"),
        pl.format("price_{}_{}_{}", "cur_i", "int_i", "new_k").alias("new_price"),
        pl.col("cur_i").replace_strict({i: c for i, (c, _) in enumerate(CURRENCIES)}, return_dtype=pl.Utf8).alias("currency"),
    ).with_columns(
        pl.when(pl.col("upgraded")).then(pl.col("new_price")).otherwise(pl.col("old_price")).alias("price"),
        pl.when(pl.col("trial") & (pl.col("trial_end") > AS_OF)).then(pl.lit("trialing"))
        .when(pl.col("canceled")).then(pl.lit("canceled")).otherwise(pl.lit("active")).alias("status"),
    )
    subscriptions = conform(subs.with_columns(
        pl.lit("default").alias("integration"), pl.col("start_date").alias("created"),
        pl.when(pl.col("trial")).then(pl.col("start_date")).alias("trial_start"),
        pl.when(pl.col("canceled")).then(pl.col("end_ts")).alias("canceled_at"),
        pl.when(pl.col("canceled")).then(pl.col("end_ts")).alias("ended_at"),
        pl.lit(False).alias("cancel_at_period_end"),
    ), "subscriptions")
    items = conform(subs.select(
        pl.lit("default").alias("integration"), pl.format("si_{}", "id").alias("id"), pl.col("id").alias("subscription"),
        "price", "quantity", pl.col("start_date").alias("created"),
    ), "subscription_items")

    # invoice lines: one regular line per 30-day period, for upgraded subscriptions (the history they carry);
    # proration lines at the upgrade
    up = subs.filter(pl.col("upgraded"))
    horizon = pl.min_horizontal(pl.col("end_ts"), pl.lit(AS_OF))
    periods = up.with_columns(
        pl.int_ranges(0, ((horizon - pl.col("start_date")).dt.total_days() // 30) + 1).alias("k")
    ).explode("k").with_columns(
        (pl.col("start_date") + pl.duration(days=pl.col("k") * 30)).alias("period_start"),
    ).with_columns((pl.col("period_start") + pl.duration(days=30)).alias("period_end"))
    regular = periods.select(
        "id", "period_start", "period_end", "quantity",
        pl.when(pl.col("period_start") < pl.col("upgrade_ts")).then(pl.col("old_price")).otherwise(pl.col("new_price")).alias("price"),
        pl.lit(False).alias("proration"), pl.lit(1000).alias("amount"),
    )
    change_period = periods.filter(
        (pl.col("period_start") < pl.col("upgrade_ts")) & (pl.col("upgrade_ts") < pl.col("period_end"))
    )
    proration = pl.concat([
        change_period.select("id", pl.col("upgrade_ts").alias("period_start"), "period_end", "quantity",
                             pl.col(p).alias("price"), pl.lit(True).alias("proration"), pl.lit(a).alias("amount"))
        for p, a in (("old_price", -500), ("new_price", 800))
    ])
    lines = pl.concat([regular, proration]).with_row_index("n")
    invoice_lines = conform(lines.select(
        pl.lit("default").alias("integration"), pl.format("il_{}", "n").alias("id"),
        pl.format("in_{}", "n").alias("invoice"), pl.lit("subscription").alias("type"),
        pl.col("id").alias("subscription"), pl.format("si_{}", "id").alias("subscription_item"),
        "price", "quantity", "amount", "period_start", "period_end", "proration",
    ), "invoice_lines")

    coupons = conform(pl.DataFrame({"integration": ["default"], "id": ["coupon_20"], "duration": ["forever"],
                                    "percent_off": [Decimal("20")]}), "coupons")
    discounts = conform(subs.filter(pl.col("coupon")).select(
        pl.lit("default").alias("integration"), pl.format("di_{}", "id").alias("id"),
        pl.lit("subscription").alias("scope"), pl.col("id").alias("target"), pl.col("id").alias("subscription"),
        pl.lit("coupon_20").alias("coupon"), pl.col("start_date").alias("start"),
    ), "discounts")

    inputs = mrr.MrrInputs(
        subscriptions=subscriptions, subscription_items=items, prices=conform(prices, "prices"),
        price_tiers=empty("price_tiers"), coupons=coupons, discounts=discounts, customers=empty("customers"),
        invoice_lines=invoice_lines, events=empty("events"), snapshots=pl.DataFrame(schema=mrr.SNAPSHOT_SCHEMA),
    )
    # truth for the naive query: each subscription's price from..to, by timestamp
    truth = subs.select(
        "id", "customer", "currency", "quantity", "coupon", "old_price", "new_price", "upgraded", "upgrade_ts",
        pl.when(pl.col("trial")).then(pl.max_horizontal("start_date", "trial_end")).otherwise(pl.col("start_date"))
        .alias("counts_from"),
        pl.when(pl.col("canceled")).then(pl.col("end_ts")).alias("counts_to"),
    )
    price_facts = prices.select(
        pl.col("id").alias("price"), "unit_amount",
        pl.col("int_i").replace_strict({i: m for i, (_, _, m) in enumerate(INTERVALS)}, return_dtype=pl.Int64).alias("month_num"),
        pl.col("int_i").replace_strict({i: c for i, (_, c, _) in enumerate(INTERVALS)}, return_dtype=pl.Int64).alias("interval_count"),
        pl.col("cur_i").replace_strict({i: e for i, (_, e) in enumerate(CURRENCIES)}, return_dtype=pl.Int64).alias("exponent"),
    )
    return inputs, {"truth": truth, "price_facts": price_facts}


NAIVE_SQL = """
with days as (
    select cast(d as date) as day from range(cast(? as date), cast(? as date) + interval 1 day, interval 1 day) t(d)
), sub_days as (  -- every subscription joined to every day of its life
    select s.id, s.customer, s.currency, d.day, s.quantity, s.coupon,
           case when s.upgraded and d.day >= cast(s.upgrade_ts as date) then s.new_price else s.old_price end as price
    from truth s join days d
      on d.day >= cast(s.counts_from as date)
     and (s.counts_to is null or d.day < cast(s.counts_to as date))
     and s.counts_from <= cast(? as timestamp)
), valued as (  -- exact: numerator over 180000 × 10^exp... on one denominator per row, then common denominator
    select sd.customer, sd.currency, sd.day,
           -- value in major units = unit_amount × qty × month_num / (12 × count × 10^exp) × (4/5 with the coupon)
           cast(p.unit_amount as hugeint) * sd.quantity * p.month_num
             * (case when sd.coupon then 4 else 5 end)
             * (180000 // (12 * p.interval_count * 5 * cast(pow(10, p.exponent) as bigint))) as num
    from sub_days sd join price_facts p using (price)
), customer_days as (
    select currency, customer, day, cast((sum(num) * 200 + 180000) // 360000 as bigint) as cents
    from valued group by all
), per_currency as (
    select currency, day, sum(cents) as cents from customer_days group by all
)
select currency, day, cents from per_currency order by currency, day
"""

NAIVE_MOVEMENTS_SQL = """
with spine as (  -- every customer × every day from its currency's first day
    select c.currency, c.customer, cast(d.d as date) as day
    from (select currency, customer, min(day) as first from customer_days group by all) c,
         range(cast(? as date), cast(? as date) + interval 1 day, interval 1 day) d(d)
    where cast(d.d as date) >= c.first
), filled as (
    select s.currency, s.customer, s.day, coalesce(cd.cents, 0) as cents
    from spine s left join customer_days cd using (currency, customer, day)
), lagged as (
    select *, coalesce(lag(cents) over w, 0) as prev,
           coalesce(max(cents) over (partition by currency, customer order by day
                                     rows between unbounded preceding and 1 preceding), 0) > 0 as had_before
    from filled window w as (partition by currency, customer order by day)
)
select currency, day,
       sum(case when prev = 0 and cents > 0 and not had_before then cents else 0 end) as new_cents,
       sum(case when prev > 0 and cents > prev then cents - prev else 0 end) as expansion_cents,
       sum(case when prev = 0 and cents > 0 and had_before then cents else 0 end) as reactivation_cents,
       sum(case when cents > 0 and cents < prev then prev - cents else 0 end) as contraction_cents,
       sum(case when cents = 0 and prev > 0 then prev else 0 end) as churned_cents
from lagged group by all order by currency, day
"""


def naive(truth: pl.DataFrame, price_facts: pl.DataFrame, first_day: dt.date, movements: bool) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    con = duckdb.connect()
    con.register("truth", truth.to_arrow())
    con.register("price_facts", price_facts.to_arrow())
    # customer_days as a table so the movement query can reuse it
    body = NAIVE_SQL.split("select currency, day, cents from per_currency")[0]
    con.execute(f"create temp table customer_days as {body} select * from customer_days",
                [first_day, TODAY, AS_OF])
    totals = con.sql("select currency, day, sum(cents) as cents from customer_days group by all order by all").pl()
    moves = None
    if movements:
        moves = con.sql(NAIVE_MOVEMENTS_SQL, params=[first_day, TODAY]).pl()
    con.close()
    return totals, moves


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--no-naive-movements", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    inputs, truth = synthetic(args.subscriptions)
    print(f"synthetic account: {args.subscriptions:,} subscriptions, {inputs.invoice_lines.height:,} invoice lines, "
          f"{DAYS} days ({time.perf_counter() - t0:.1f}s to generate)")
    rss_before = peak_rss_mb()

    t0 = time.perf_counter()
    intervals = mrr.subscription_mrr_intervals(inputs, options=MrrOptions(), as_of=AS_OF)
    t_intervals = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame = mrr.daily_mrr(intervals, TODAY)
    t_daily = time.perf_counter() - t0
    ours = t_intervals + t_daily
    rss_ours = peak_rss_mb()
    print(f"transform: subscription_mrr_intervals {t_intervals:.2f}s ({intervals.height:,} intervals) + "
          f"daily_mrr {t_daily:.2f}s ({frame.height:,} rows) = {ours:.2f}s; peak RSS {rss_ours:,.0f} MB "
          f"(before: {rss_before:,.0f} MB)")

    t0 = time.perf_counter()
    mismatched = live.live_mrr_mismatches(frame, intervals, inputs, MrrOptions(), AS_OF)
    t_live = time.perf_counter() - t0
    print(f"live check (today from the current objects, no history): {t_live:.2f}s = {t_live / ours:.2f}x the "
          f"transform; {mismatched.height} mismatching rows")

    first_day = frame.get_column("date").min()
    t0 = time.perf_counter()
    totals, moves = naive(truth["truth"], truth["price_facts"], first_day, movements=not args.no_naive_movements)
    t_naive = time.perf_counter() - t0
    print(f"naive DuckDB date spine{' with movements' if moves is not None else ''}: {t_naive:.2f}s; "
          f"peak RSS {peak_rss_mb():,.0f} MB")

    ours_cents = frame.select(
        "currency", pl.col("date").alias("day"), (pl.col("mrr") * 100).cast(pl.Int64).alias("cents")
    )
    joined = ours_cents.join(totals.with_columns(pl.col("cents").cast(pl.Int64)), on=["currency", "day"],
                             how="full", coalesce=True, suffix="_naive")
    joined = joined.filter(pl.col("day") >= first_day).with_columns(pl.col("cents", "cents_naive").fill_null(0))
    diff = joined.filter(pl.col("cents") != pl.col("cents_naive"))
    print(f"same daily mrr per currency: {diff.height == 0} ({joined.height:,} currency-days compared, "
          f"{diff.height} differ)")
    if diff.height:
        print(diff.head(5))
    if moves is not None:
        mine = frame.select("currency", pl.col("date").alias("day"),
                            *[(pl.col(m) * 100).cast(pl.Int64).alias(m.replace("_mrr", "_cents"))
                              for m in mrr.MOVEMENTS])
        cols = [m.replace("_mrr", "_cents") for m in mrr.MOVEMENTS]
        cmp = mine.join(moves.with_columns(pl.col(cols).cast(pl.Int64)), on=["currency", "day"], how="inner",
                        suffix="_naive")
        bad = cmp.filter(pl.any_horizontal([pl.col(c) != pl.col(f"{c}_naive") for c in cols]))
        print(f"same movements: {bad.height == 0} ({cmp.height:,} currency-days compared, {bad.height} differ)")
    print(f"movement identity breaks: {mrr.movement_breaks(frame).height}; gaps: {mrr.gap_rows(frame, TODAY).height}")
    print(f"ratio naive / transform: {t_naive / ours:.1f}x")
    print(f"peak RSS of this process: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
