-- Cohort retention per integration and currency: customers grouped by the month of their first day with MRR > 0, and for every month since, how many of them pay and their summed MRR at that month's end, as shares of the same at the end of their first month.
-- test: unique(integration, currency, cohort_month, months_since_start)
-- test: not_null(integration, currency, cohort_month, months_since_start, month, as_of_date, cohort_customers, first_month_customers, first_month_mrr, customers, mrr)
-- test: expression(customers <= cohort_customers and first_month_customers <= cohort_customers) as customers_within_the_cohort
-- test: expression(least(first_month_mrr, mrr) >= 0) as mrr_not_negative
-- test: query(
--     select m.month, m.currency, m.mrr as ending_mrr, m.paying_customers, c.mrr as cohorts_mrr, c.customers as cohorts_customers
--     from marts.mrr_monthly as m
--     full join (select integration, currency, month, sum(mrr) as mrr, sum(customers) as customers from this group by all) as c
--         on c.integration = m.integration and c.currency = m.currency and c.month = m.month
--     where m.month is null or coalesce(c.mrr, 0) <> m.mrr or coalesce(c.customers, 0) <> m.paying_customers
-- ) as cohorts_add_up_to_mrr_daily
--
-- Every customer paying at the end of a month belongs to exactly one cohort, so per month the cohorts' customers and
-- MRR add up to metrics.mrr_daily's paying_customers and mrr at that month's end (cohorts_add_up_to_mrr_daily
-- compares the two sources). A customer who joined and left within its first month counts in cohort_customers but
-- not in first_month_customers; if it comes back later it counts again, so a rate can exceed 1. Rates are fractions
-- rounded half-up to 4 decimals, null when the cohort had no MRR at the end of its first month.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: lowercase ISO code as Stripe writes it; a customer paying in two currencies is in a cohort of each.
-- @col cohort_month: the month of the customers' first day with MRR > 0 (first day of the month, UTC).
-- @col months_since_start: 0 for the cohort's own month, 1 for the next, and so on up to the current month.
-- @col month: cohort_month plus months_since_start: the month whose end is measured.
-- @col as_of_date: the day whose end is that month's end: its last day, or today for the current month.
-- @col cohort_customers: customers whose first day with MRR > 0 falls in cohort_month.
-- @col first_month_customers: of those, the ones with MRR > 0 at the end of cohort_month (denominator of customer_retention_rate).
-- @col first_month_mrr: their summed MRR at the end of cohort_month (denominator of mrr_retention_rate).
-- @col customers: cohort customers with MRR > 0 at the end of month.
-- @col mrr: the cohort's summed MRR at the end of month.
-- @col customer_retention_rate: customers / first_month_customers (logo retention).
-- @col mrr_retention_rate: mrr / first_month_mrr (net MRR retention: expansion and reactivation count).
with months as (
    select integration, currency, month, as_of_date
    from marts.mrr_monthly
),

month_ends as (
    -- each customer's MRR at the end of every month it ends paying
    select integration, currency, customer, month, mrr
    from marts.customer_mrr_monthly
),

members as (
    select integration, currency, customer, date_trunc('month', min(date))::date as cohort_month
    from metrics.mrr_customer_movements
    where mrr > 0
    group by integration, currency, customer
),

sizes as (
    select integration, currency, cohort_month, count(*) as cohort_customers
    from members
    group by all
),

measured as (
    select p.integration, p.currency, p.cohort_month, e.month, count(*) as customers, sum(e.mrr) as mrr
    from members as p
    join month_ends as e
        on e.integration = p.integration and e.currency = p.currency and e.customer = p.customer
    group by all
),

grid as (
    select
        s.integration,
        s.currency,
        s.cohort_month,
        m.month,
        m.as_of_date,
        s.cohort_customers,
        coalesce(v.customers, 0) as customers,
        coalesce(v.mrr, 0)::decimal(18, 2) as mrr
    from sizes as s
    join months as m
        on m.integration = s.integration and m.currency = s.currency and m.month >= s.cohort_month
    left join measured as v
        on v.integration = s.integration and v.currency = s.currency and v.cohort_month = s.cohort_month
        and v.month = m.month
),

based as (
    select
        *,
        first_value(customers) over cohort as first_month_customers,
        first_value(mrr) over cohort as first_month_mrr
    from grid
    window cohort as (partition by integration, currency, cohort_month order by month)
)

select
    integration,
    currency,
    cohort_month,
    datediff('month', cohort_month, month)::integer as months_since_start,
    month,
    as_of_date,
    cohort_customers::integer as cohort_customers,
    first_month_customers::integer as first_month_customers,
    first_month_mrr,
    customers::integer as customers,
    mrr,
    case when first_month_customers > 0
        then ((20000 * customers::hugeint + first_month_customers) // (2 * first_month_customers) * 0.0001)::decimal(18, 4)
    end as customer_retention_rate,
    case when first_month_mrr > 0
        then ((20000 * (mrr * 100)::hugeint + (first_month_mrr * 100)::hugeint)
              // (2 * (first_month_mrr * 100)::hugeint) * 0.0001)::decimal(18, 4)
    end as mrr_retention_rate
from based
order by integration, currency, cohort_month, months_since_start
