"""Every currency's MRR in one reporting currency, from rates the user supplies.

Belongs here: reading a rates table (as text columns) into exact rates, finding the days of each currency without a
rate, converting `metrics.mrr_daily` into `metrics.mrr_daily_reporting` and `marts.kpis_monthly` into
`marts.kpis_monthly_reporting`, and the predicates that check them (offending rows; empty = fine). Not here: reading
the rates file or the warehouse (the `defs` assets do), or the definitions of MRR and the KPIs themselves
(`daily.py`, `dbt_like_sql/marts/kpis_monthly.sql`).

The rules: a rate is units of the reporting currency per unit of a currency. A day uses the latest rate on or before
it; a day of a currency without such a rate is an error naming the currency and the day, never a default. Each
currency's amount is converted exactly (integers: cents × rate in 10⁻¹² units) and rounded half-up to 0.01, then the
converted amounts are summed. The reporting currency itself converts at 1.

Converted daily MRR moves with the rates as well as with customers: `fx_adjustment_mrr` is the part of a day's
change the converted movements do not explain (rate changes and the rounding of each currency), so that
mrr(D) - mrr(D-1) = new + expansion + reactivation - contraction - churned + fx_adjustment holds to the cent.
Retention (NRR, GRR) is measured in constant currency: a cohort's start and end MRR are both converted at the rates
of the start of the month, so rate changes never count as expansion or churn and GRR stays between 0 and 1.
"""

from __future__ import annotations

import polars as pl

from segflow_pipeline.transform import money

MOVEMENTS = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")
PICO = money.PICO
_RATE_TEXT = r"^[0-9]+(\.[0-9]{1,12})?$"

RATES_SCHEMA: dict[str, pl.DataType] = {"date": pl.Date(), "currency": pl.Utf8(), "rate": pl.Decimal(38, 12)}

# metrics.mrr_daily_reporting, in this column order.
DAILY_REPORTING_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "date": pl.Date(),
    "reporting_currency": pl.Utf8(),
    "mrr": pl.Decimal(18, 2),
    "arr": pl.Decimal(18, 2),
    **{name: pl.Decimal(18, 2) for name in MOVEMENTS},
    "fx_adjustment_mrr": pl.Decimal(18, 2),
}
DAILY_REPORTING_DESCRIPTION = ("Daily MRR and its movements of every currency converted into one reporting currency "
                               "and summed, with the rates of SEGFLOW_FX_RATES.")
DAILY_REPORTING_COLUMNS: dict[str, str] = {
    "integration": "the configured Stripe account (`default` for the environment key).",
    "date": "UTC day; the value is the state at the end of that day.",
    "reporting_currency": "the currency every amount is in (SEGFLOW_REPORTING_CURRENCY), lowercase ISO code.",
    "mrr": "the sum over currencies of each currency's MRR converted at the day's rate, rounded half-up to 0.01.",
    "arr": "12 × mrr.",
    "new_mrr": "the day's new MRR of each currency, converted at the day's rate and summed.",
    "expansion_mrr": "the day's expansion MRR of each currency, converted at the day's rate and summed.",
    "reactivation_mrr": "the day's reactivation MRR of each currency, converted at the day's rate and summed.",
    "contraction_mrr": "the day's contraction MRR of each currency, converted at the day's rate and summed (positive).",
    "churned_mrr": "the day's churned MRR of each currency, converted at the day's rate and summed (positive).",
    "fx_adjustment_mrr": "the change of mrr since the day before that the movements do not explain: rate changes and "
                         "rounding (can be negative).",
}

# marts.kpis_monthly_reporting, in this column order.
KPIS_REPORTING_SCHEMA: dict[str, pl.DataType] = {
    "integration": pl.Utf8(),
    "reporting_currency": pl.Utf8(),
    "month": pl.Date(),
    "as_of_date": pl.Date(),
    "starting_mrr": pl.Decimal(18, 2),
    "ending_mrr": pl.Decimal(18, 2),
    "net_new_mrr": pl.Decimal(18, 2),
    **{name: pl.Decimal(18, 2) for name in MOVEMENTS},
    "fx_adjustment_mrr": pl.Decimal(18, 2),
    "paying_customers": pl.Int32(),
    "arpa": pl.Decimal(18, 2),
    "starting_customers": pl.Int32(),
    "churned_customers": pl.Int32(),
    "new_customers": pl.Int32(),
    "reactivated_customers": pl.Int32(),
    "logo_churn_rate": pl.Decimal(18, 4),
    "cohort_starting_mrr": pl.Decimal(18, 2),
    "cohort_ending_mrr": pl.Decimal(18, 2),
    "retained_mrr": pl.Decimal(18, 2),
    "net_revenue_retention": pl.Decimal(18, 4),
    "gross_revenue_retention": pl.Decimal(18, 4),
    "gross_revenue_churn_rate": pl.Decimal(18, 4),
    "quick_ratio": pl.Decimal(18, 4),
}
KPIS_REPORTING_DESCRIPTION = ("Monthly KPIs of all currencies together in the reporting currency: MRR at the start "
                              "and end, movements, FX adjustment, paying customers, ARPA, logo churn, and net and "
                              "gross revenue retention in constant currency.")
KPIS_REPORTING_COLUMNS: dict[str, str] = {
    "integration": "the configured Stripe account (`default` for the environment key).",
    "reporting_currency": "the currency every amount is in (SEGFLOW_REPORTING_CURRENCY), lowercase ISO code.",
    "month": "first day of the calendar month (UTC).",
    "as_of_date": "the day whose end is the month's end: its last day, or today for the current month.",
    "starting_mrr": "metrics.mrr_daily_reporting's mrr at the end of the previous month (0 before the first month).",
    "ending_mrr": "metrics.mrr_daily_reporting's mrr at the end of the month, or today.",
    "net_new_mrr": "ending_mrr - starting_mrr.",
    "new_mrr": "the month's new MRR: the sum of the converted daily movements.",
    "expansion_mrr": "the month's expansion MRR: the sum of the converted daily movements.",
    "reactivation_mrr": "the month's reactivation MRR: the sum of the converted daily movements.",
    "contraction_mrr": "the month's contraction MRR: the sum of the converted daily movements (positive).",
    "churned_mrr": "the month's churned MRR: the sum of the converted daily movements (positive).",
    "fx_adjustment_mrr": "the month's change of MRR due to rate changes and rounding, so that starting + movements "
                         "+ fx_adjustment = ending.",
    "paying_customers": "paying customers at the end of the month, summed over currencies (a customer paying in two "
                        "currencies counts twice).",
    "arpa": "ending_mrr / paying_customers, rounded half-up to 0.01.",
    "starting_customers": "the start-of-month cohorts of all currencies: customers with MRR > 0 at the start.",
    "churned_customers": "cohort customers with MRR 0 at the end of the month, summed over currencies.",
    "new_customers": "customers whose first day with MRR > 0 falls in the month, summed over currencies.",
    "reactivated_customers": "customers with a reactivation in the month, summed over currencies.",
    "logo_churn_rate": "churned_customers / starting_customers.",
    "cohort_starting_mrr": "the cohorts' MRR at the start, converted at the rates of the month's start "
                           "(= starting_mrr).",
    "cohort_ending_mrr": "the cohorts' MRR at the end of the month, converted at the rates of the month's start "
                         "(constant currency).",
    "retained_mrr": "sum over the cohorts of min(end, start) MRR per customer, converted at the rates of the month's "
                    "start.",
    "net_revenue_retention": "cohort_ending_mrr / cohort_starting_mrr (NRR in constant currency).",
    "gross_revenue_retention": "retained_mrr / cohort_starting_mrr (GRR in constant currency), between 0 and 1.",
    "gross_revenue_churn_rate": "1 - gross_revenue_retention.",
    "quick_ratio": "(new_mrr + expansion_mrr + reactivation_mrr) / (contraction_mrr + churned_mrr); null when "
                   "nothing was lost.",
}


class RatesError(ValueError):
    """The rates cannot be used; the message names the file, the line and what to change."""


# --- rates -------------------------------------------------------------------------------------------------------


def rates_table(raw: pl.DataFrame, reporting_currency: str, where: str = "rates") -> pl.DataFrame:
    """The rates file as read (columns date, currency, rate as text, one row per line after the header) →
    RATES_SCHEMA, sorted by currency and date. Raises `RatesError` naming the line of the first problem."""
    missing = [c for c in RATES_SCHEMA if c not in raw.columns]
    if missing:
        raise RatesError(f"{where}: the header must be date,currency,rate (missing {', '.join(missing)})")
    text = raw.select(pl.col(c).cast(pl.Utf8).str.strip_chars() for c in RATES_SCHEMA).with_row_index("line", 2)
    typed = text.with_columns(
        pl.col("date").str.to_date("%Y-%m-%d", strict=False).alias("day"),
        pl.col("currency").str.to_lowercase().alias("code"),
        pl.when(pl.col("rate").str.contains(_RATE_TEXT)).then(pl.col("rate"))
        .cast(pl.Decimal(38, 12), strict=False).alias("value"),
    )
    problems = [
        (pl.col("day").is_null(), "date must be YYYY-MM-DD"),
        (~pl.col("code").fill_null("").str.contains(r"^[a-z]{3}$"), "currency must be a three-letter ISO code"),
        (pl.col("value").is_null() | (pl.col("value") <= 0),
         "rate must be a positive decimal number with at most 12 decimals"),
        (pl.struct("day", "code").is_duplicated(), "a second rate for the same currency and date"),
        ((pl.col("code") == reporting_currency) & (pl.col("value") != 1),
         f"{reporting_currency} is the reporting currency, so its rate is 1; rates are units of "
         f"{reporting_currency} per unit of currency"),
    ]
    for condition, message in problems:
        bad = typed.filter(condition)
        if bad.height:
            row = bad.row(0, named=True)
            raise RatesError(f"{where}, line {row['line']} ({row['date']},{row['currency']},{row['rate']}): {message}"
                             + (f" ({bad.height} lines)" if bad.height > 1 else ""))
    return typed.select(pl.col("day").alias("date"), pl.col("code").alias("currency"), pl.col("value").alias("rate")
                        ).sort("currency", "date").cast(RATES_SCHEMA)


def _with_rates(frame: pl.DataFrame, rates: pl.DataFrame, reporting_currency: str, day: str) -> pl.DataFrame:
    """`frame` with `rate_pico`: its currency's latest rate on or before `day`, in 10⁻¹² units (null: none)."""
    table = rates.select(pl.col("date").alias("__rate_day"), "currency",
                         pl.col("rate").cast(pl.Decimal(38, 12)).to_physical().cast(pl.Int128).alias("rate_pico"))
    # sorted by day overall, so also within each currency (which Polars cannot check when grouping `by`)
    joined = (frame.with_row_index("__row").sort(day)
              .join_asof(table.sort("__rate_day"), left_on=day, right_on="__rate_day", by="currency",
                         strategy="backward", check_sortedness=False)
              .sort("__row").drop("__row", "__rate_day"))
    return joined.with_columns(pl.when(pl.col("currency") == reporting_currency).then(pl.lit(PICO, pl.Int128))
                               .otherwise(pl.col("rate_pico")).alias("rate_pico"))


def _cents(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Decimal(38, 2)).to_physical().cast(pl.Int128)


def _converted_cents(column: str) -> pl.Expr:
    """A non-negative DECIMAL amount × rate_pico, rounded half-up to 0.01, as Int128 cents (0 needs no rate)."""
    cents = _cents(column)
    return (pl.when(cents == 0).then(pl.lit(0, pl.Int128))
            .otherwise(money.half_up_cents(cents * pl.col("rate_pico"), 100 * PICO).cast(pl.Int128)))


def _half_up_quotient(numerator: pl.Expr, denominator: pl.Expr, decimals: int) -> pl.Expr:
    """numerator / denominator (integers, numerator ≥ 0) × 10^decimals rounded half-up, as Int128; null when the
    denominator is 0."""
    unit = 10**decimals
    den = denominator.cast(pl.Int128)
    return pl.when(den > 0).then((numerator.cast(pl.Int128) * 2 * unit + den) // pl.max_horizontal(den * 2, 1))


def _ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator rounded half-up to 4 decimals, as DECIMAL(18,4); null when the denominator is 0."""
    return (_half_up_quotient(numerator, denominator, 4).cast(pl.Decimal(38, 4)) / 10_000).cast(pl.Decimal(18, 4))


def missing_rates(daily: pl.DataFrame, rates: pl.DataFrame, reporting_currency: str) -> pl.DataFrame:
    """Per (integration, currency) of metrics.mrr_daily rows, the days without a rate on or before them:
    first_day, last_day, days. Empty when every day can be converted."""
    joined = _with_rates(daily.select("integration", "currency", "date"), rates, reporting_currency, "date")
    return (joined.filter(pl.col("rate_pico").is_null())
            .group_by("integration", "currency")
            .agg(pl.col("date").min().alias("first_day"), pl.col("date").max().alias("last_day"),
                 pl.len().cast(pl.Int64).alias("days"))
            .sort("integration", "currency"))


def missing_rates_message(missing: pl.DataFrame, reporting_currency: str) -> str:
    """One line naming each currency and its first day without a rate, and what to do."""
    parts = [f"{r['currency']} on {r['first_day']}" + (f" (and {r['days'] - 1} later days)" if r["days"] > 1 else "")
             for r in missing.iter_rows(named=True)]
    return (f"no rate into {reporting_currency} for {'; '.join(parts)}: add a rate dated on or before each of those "
            "days to the SEGFLOW_FX_RATES file")


# --- conversions -------------------------------------------------------------------------------------------------


def daily_reporting(daily: pl.DataFrame, rates: pl.DataFrame, reporting_currency: str) -> pl.DataFrame:
    """metrics.mrr_daily (its contract columns) → metrics.mrr_daily_reporting (DAILY_REPORTING_SCHEMA): one row per
    (integration, date) from the first day of any currency to the last, sorted. Raises `RatesError` when a day has
    no rate (check `missing_rates` first)."""
    missing = missing_rates(daily, rates, reporting_currency)
    if missing.height:
        raise RatesError(missing_rates_message(missing, reporting_currency))
    amounts = ("mrr", *MOVEMENTS)
    converted = (_with_rates(daily.select("integration", "currency", "date", *amounts), rates, reporting_currency,
                             "date")
                 .with_columns(_converted_cents(c).alias(c) for c in amounts)
                 .group_by("integration", "date").agg(pl.col(c).sum() for c in amounts)
                 .sort("integration", "date"))
    gained = pl.col("new_mrr") + pl.col("expansion_mrr") + pl.col("reactivation_mrr")
    lost = pl.col("contraction_mrr") + pl.col("churned_mrr")
    before = pl.col("mrr").shift(1).over("integration", order_by="date").fill_null(0)
    return converted.select(
        "integration", "date", pl.lit(reporting_currency).alias("reporting_currency"),
        money.cents_to_decimal(pl.col("mrr")).alias("mrr"),
        money.cents_to_decimal(pl.col("mrr") * 12).alias("arr"),
        *[money.cents_to_decimal(pl.col(m)).alias(m) for m in MOVEMENTS],
        money.cents_to_decimal(pl.col("mrr") - before - gained + lost).alias("fx_adjustment_mrr"),
    ).cast(DAILY_REPORTING_SCHEMA)


def kpis_reporting(kpis: pl.DataFrame, daily: pl.DataFrame, rates: pl.DataFrame,
                   reporting_currency: str) -> pl.DataFrame:
    """marts.kpis_monthly (per currency) and metrics.mrr_daily_reporting → marts.kpis_monthly_reporting
    (KPIS_REPORTING_SCHEMA), one row per (integration, month), sorted. MRR and movements come from the daily
    reporting series; cohort amounts are each currency's, converted at the rate of the day before the month."""
    keys = ["integration", "month"]
    by_currency = _with_rates(kpis.with_columns(pl.col("month").dt.offset_by("-1d").alias("start_day")), rates,
                              reporting_currency, "start_day")
    cohorts = (by_currency
               .with_columns(_converted_cents(c).alias(c) for c in ("starting_mrr", "cohort_ending_mrr",
                                                                     "retained_mrr"))
               .group_by(keys).agg(
                   pl.col("as_of_date").max(), pl.col("start_day").first(),
                   *[pl.col(c).sum() for c in ("paying_customers", "starting_customers", "churned_customers",
                                               "new_customers", "reactivated_customers")],
                   pl.col("starting_mrr").sum().alias("cohort_start"),
                   pl.col("cohort_ending_mrr").sum().alias("cohort_end"),
                   pl.col("retained_mrr").sum().alias("retained")))
    day_cents = daily.select("integration", "date", _cents("mrr").alias("mrr_cents"))
    months = (daily.group_by("integration", pl.col("date").dt.truncate("1mo").alias("month"))
              .agg(*[_cents(c).sum().alias(c) for c in (*MOVEMENTS, "fx_adjustment_mrr")]))
    frame = (cohorts
             .join(months, on=keys, how="left")
             .join(day_cents.rename({"date": "start_day", "mrr_cents": "start"}), on=["integration", "start_day"],
                   how="left")
             .join(day_cents.rename({"date": "as_of_date", "mrr_cents": "end"}), on=["integration", "as_of_date"],
                   how="left")
             .with_columns(pl.col("start").fill_null(0),
                           *[pl.col(c).fill_null(0) for c in (*MOVEMENTS, "fx_adjustment_mrr")])
             .sort(keys))
    gained = pl.col("new_mrr") + pl.col("expansion_mrr") + pl.col("reactivation_mrr")
    lost = pl.col("contraction_mrr") + pl.col("churned_mrr")
    grr = _ratio(pl.col("retained"), pl.col("cohort_start"))
    return frame.select(
        "integration", pl.lit(reporting_currency).alias("reporting_currency"), "month", "as_of_date",
        money.cents_to_decimal(pl.col("start")).alias("starting_mrr"),
        money.cents_to_decimal(pl.col("end")).alias("ending_mrr"),
        money.cents_to_decimal(pl.col("end") - pl.col("start")).alias("net_new_mrr"),
        *[money.cents_to_decimal(pl.col(m)).alias(m) for m in (*MOVEMENTS, "fx_adjustment_mrr")],
        "paying_customers",
        money.cents_to_decimal(_half_up_quotient(pl.col("end"), pl.col("paying_customers"), 0)).alias("arpa"),
        "starting_customers", "churned_customers", "new_customers", "reactivated_customers",
        _ratio(pl.col("churned_customers"), pl.col("starting_customers")).alias("logo_churn_rate"),
        money.cents_to_decimal(pl.col("cohort_start")).alias("cohort_starting_mrr"),
        money.cents_to_decimal(pl.col("cohort_end")).alias("cohort_ending_mrr"),
        money.cents_to_decimal(pl.col("retained")).alias("retained_mrr"),
        _ratio(pl.col("cohort_end"), pl.col("cohort_start")).alias("net_revenue_retention"),
        grr.alias("gross_revenue_retention"),
        (pl.lit(1).cast(pl.Decimal(18, 4)) - grr).alias("gross_revenue_churn_rate"),
        _ratio(gained, lost).alias("quick_ratio"),
    ).cast(KPIS_REPORTING_SCHEMA)


# --- predicates (offending rows) ---------------------------------------------------------------------------------


def reporting_gaps(reporting: pl.DataFrame, daily: pl.DataFrame) -> pl.DataFrame:
    """Days of metrics.mrr_daily (any currency) that metrics.mrr_daily_reporting does not hold exactly once, and
    days it holds that mrr_daily has not: integration, date, rows (0 = missing)."""
    keys = ["integration", "date"]
    wanted = daily.select(keys).unique()
    have = reporting.group_by(keys).agg(pl.len().cast(pl.Int64).alias("rows"))
    wrong = wanted.join(have, on=keys, how="left").with_columns(pl.col("rows").fill_null(0)).filter(pl.col("rows") != 1)
    return pl.concat([wrong, have.join(wanted, on=keys, how="anti")]).sort(keys)


def conversion_mismatches(reporting_kpis: pl.DataFrame, kpis: pl.DataFrame, rates: pl.DataFrame,
                          reporting_currency: str) -> pl.DataFrame:
    """Months whose starting or ending MRR in marts.kpis_monthly_reporting (from the daily reporting series) differ
    from marts.kpis_monthly's per-currency values converted at the rates of those days, or whose cohort start
    differs from starting_mrr: integration, month, the values compared."""
    per_currency = (_with_rates(kpis.with_columns(pl.col("month").dt.offset_by("-1d").alias("start_day")), rates,
                                reporting_currency, "start_day")
                    .with_columns(_converted_cents("starting_mrr").alias("start"))
                    .drop("rate_pico"))
    per_currency = (_with_rates(per_currency, rates, reporting_currency, "as_of_date")
                    .with_columns(_converted_cents("ending_mrr").alias("end")))
    expected = per_currency.group_by("integration", "month").agg(
        money.cents_to_decimal(pl.col("start").sum()).alias("expected_starting_mrr"),
        money.cents_to_decimal(pl.col("end").sum()).alias("expected_ending_mrr"))
    compared = reporting_kpis.select("integration", "month", "starting_mrr", "ending_mrr", "cohort_starting_mrr").join(
        expected, on=["integration", "month"], how="full", coalesce=True)
    return compared.filter(
        pl.any_horizontal(pl.col("starting_mrr").is_null(), pl.col("expected_starting_mrr").is_null(),
                          pl.col("starting_mrr") != pl.col("expected_starting_mrr"),
                          pl.col("ending_mrr") != pl.col("expected_ending_mrr"),
                          pl.col("cohort_starting_mrr") != pl.col("starting_mrr"))
    ).sort("integration", "month")


def kpi_range_breaks(reporting_kpis: pl.DataFrame) -> pl.DataFrame:
    """Months whose rates leave their range: GRR and logo churn outside [0, 1], NRR or quick ratio below 0, or
    amounts that must be positive below 0."""
    share = [pl.col(c).is_not_null() & ((pl.col(c) < 0) | (pl.col(c) > 1))
             for c in ("gross_revenue_retention", "logo_churn_rate")]
    positive = [pl.col(c).is_not_null() & (pl.col(c) < 0)
                for c in ("net_revenue_retention", "quick_ratio", "starting_mrr", "ending_mrr", *MOVEMENTS)]
    return reporting_kpis.filter(pl.any_horizontal(*share, *positive)).sort("integration", "month")
