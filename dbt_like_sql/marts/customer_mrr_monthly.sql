-- Each customer's MRR at the end of every month it ends paying, per integration and currency: the customer-level month ends that marts.kpis_monthly and marts.cohort_retention are built from.
-- test: unique(integration, currency, customer, month)
-- test: not_null(integration, currency, customer, month, mrr)
-- test: expression(mrr > 0) as mrr_positive
-- test: query(
--     select m.month, m.currency, m.mrr, m.paying_customers, c.mrr as customers_mrr, c.customers
--     from marts.mrr_monthly as m
--     full join (select integration, currency, month, sum(mrr) as mrr, count(*) as customers from this group by all) as c
--         on c.integration = m.integration and c.currency = m.currency and c.month = m.month
--     where m.month is null or coalesce(c.mrr, 0) <> m.mrr or coalesce(c.customers, 0) <> m.paying_customers
-- ) as adds_up_to_mrr_daily
--
-- A change of a customer's MRR on day D (metrics.mrr_customer_movements) holds at the end of every month from D's to
-- the month before its next change, or to the current month, whose end is now. Months the customer ends with MRR 0
-- have no row. Amounts are the customer's MRR rounded to 0.01 as in metrics.mrr_customer_movements, so per month they
-- add up to metrics.mrr_daily's mrr and paying_customers at the month's end (adds_up_to_mrr_daily compares the two).
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: lowercase ISO code as Stripe writes it; a customer paying in two currencies has a row in each.
-- @col customer: Stripe customer id.
-- @col month: first day of the calendar month (UTC) whose end is measured: its last day, or now for the current month.
-- @col mrr: the customer's MRR in this currency at the end of month (above 0).
with current_months as (
    select integration, currency, max(month) as current_month
    from marts.mrr_monthly
    group by integration, currency
),

changes as (
    -- each customer's MRR holds from the day it changed until the day before its next change
    select
        integration,
        currency,
        customer,
        date,
        mrr,
        lead(date) over (partition by integration, currency, customer order by date) as next_date
    from metrics.mrr_customer_movements
)

select
    c.integration,
    c.currency,
    c.customer,
    unnest(generate_series(
        date_trunc('month', c.date)::timestamp,
        coalesce(date_trunc('month', c.next_date) - interval 1 month, m.current_month)::timestamp,
        interval 1 month
    ))::date as month,
    c.mrr::decimal(18, 2) as mrr
from changes as c
join current_months as m
    on m.integration = c.integration and m.currency = c.currency
where c.mrr > 0
order by c.integration, c.currency, month, c.customer
