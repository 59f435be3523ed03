-- End-of-month MRR and ARR per integration and currency; the current month shows today's value.
-- test: unique(integration, currency, month)
-- test: not_null(integration, currency, month, as_of_date, mrr, arr, active_subscriptions, paying_customers)
-- test: expression(arr = 12 * mrr) as arr_is_twelve_times_mrr
-- test: expression(mrr >= 0) as mrr_not_negative
--
-- The values are those of metrics.mrr_daily on as_of_date.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: lowercase ISO code as Stripe writes it; currencies are never mixed.
-- @col month: first day of the calendar month (UTC).
-- @col as_of_date: the day whose end-of-day state is shown: the month's last day, or today for the current month.
-- @col mrr: monthly recurring revenue at the end of as_of_date, in the currency's major unit.
-- @col arr: 12 × mrr.
-- @col active_subscriptions: subscriptions with MRR > 0 at the end of as_of_date.
-- @col paying_customers: customers with MRR > 0 at the end of as_of_date.
with daily as (
    select
        integration,
        currency,
        date,
        date_trunc('month', date)::date as month,
        mrr,
        arr,
        active_subscriptions,
        paying_customers
    from metrics.mrr_daily
),

month_ends as (
    select integration, currency, month, max(date) as as_of_date
    from daily
    group by integration, currency, month
)

select
    d.integration,
    d.currency,
    d.month,
    e.as_of_date,
    d.mrr,
    d.arr,
    d.active_subscriptions,
    d.paying_customers
from month_ends as e
join daily as d
    on d.integration = e.integration and d.currency = e.currency and d.date = e.as_of_date
order by d.integration, d.currency, d.month
