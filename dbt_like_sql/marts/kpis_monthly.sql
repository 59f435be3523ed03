-- Monthly KPIs per integration and currency: MRR at the start and end of the month, its five movements, paying customers, ARPA, logo churn, net and gross revenue retention, gross revenue churn and quick ratio, retention measured on the start-of-month cohort.
-- test: unique(integration, currency, month)
-- test: not_null(integration, currency, month, as_of_date, starting_mrr, ending_mrr, net_new_mrr, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, paying_customers, starting_customers, churned_customers, new_customers, reactivated_customers, cohort_ending_mrr, retained_mrr)
-- test: expression(starting_mrr + new_mrr + expansion_mrr + reactivation_mrr - contraction_mrr - churned_mrr = ending_mrr) as movements_reconcile
-- test: expression(least(starting_mrr, ending_mrr, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, cohort_ending_mrr, retained_mrr) >= 0) as amounts_not_negative
-- test: expression(logo_churn_rate is null or logo_churn_rate between 0 and 1) as logo_churn_rate_is_a_share
-- test: expression(gross_revenue_retention is null or gross_revenue_retention between 0 and 1) as gross_revenue_retention_is_a_share
-- test: expression(net_revenue_retention is null or net_revenue_retention >= 0) as net_revenue_retention_not_negative
-- test: query(
--     select k.month as kpis_month, b.month as bridge_month, k.currency, b.currency as bridge_currency,
--         k.starting_mrr, b.starting_mrr as bridge_starting_mrr, k.ending_mrr, b.ending_mrr as bridge_ending_mrr,
--         k.starting_customers, p.paying_customers as paying_customers_at_start
--     from this as k
--     full join marts.mrr_bridge_monthly as b
--         on b.integration = k.integration and b.currency = k.currency and b.month = k.month
--     left join marts.mrr_monthly as p
--         on p.integration = k.integration and p.currency = k.currency and p.month = k.month - interval 1 month
--     where k.month is null or b.month is null
--         or k.starting_mrr <> b.starting_mrr or k.ending_mrr <> b.ending_mrr
--         or k.new_mrr <> b.new_mrr or k.expansion_mrr <> b.expansion_mrr or k.reactivation_mrr <> b.reactivation_mrr
--         or k.contraction_mrr <> b.contraction_mrr or k.churned_mrr <> b.churned_mrr
--         or k.starting_customers <> coalesce(p.paying_customers, 0)
-- ) as agrees_with_mrr_daily
--
-- "Start" of month M = the end of M-1's last day; "end" = the end of M's last day, or now (today's row of
-- metrics.mrr_daily) for the current month. Every customer amount is its MRR rounded to 0.01 as in
-- metrics.mrr_customer_movements, so the cohort sums add up to the totals of metrics.mrr_daily to the cent (the
-- agrees_with_mrr_daily check compares the two sources). Rates are fractions (0.05 = 5 %) for the month, not
-- annualized, rounded half-up to 4 decimals, null when their denominator is 0.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: lowercase ISO code as Stripe writes it; currencies are never mixed.
-- @col month: first day of the calendar month (UTC).
-- @col as_of_date: the day whose end is the month's end: its last day, or today for the current month.
-- @col starting_mrr: MRR at the start of the month (end of the previous month's last day); 0 in a currency's first month.
-- @col ending_mrr: MRR at the end of the month, or now for the current month.
-- @col net_new_mrr: ending_mrr - starting_mrr.
-- @col new_mrr: MRR of customers whose first paying day falls in the month (sum of the daily movements).
-- @col expansion_mrr: increases of customers already paying, summed over the days of the month.
-- @col reactivation_mrr: MRR of customers who paid before, stopped, and paid again during the month.
-- @col contraction_mrr: decreases of customers who keep paying, summed over the days of the month (positive).
-- @col churned_mrr: MRR of customers who stopped paying during the month (positive).
-- @col paying_customers: customers with MRR > 0 at the end of the month.
-- @col arpa: average revenue per account: ending_mrr / paying_customers, rounded half-up to 0.01.
-- @col starting_customers: the start-of-month cohort: customers with MRR > 0 at the start of the month.
-- @col churned_customers: cohort customers with MRR 0 at the end of the month (one who left and came back within the month is not churned).
-- @col new_customers: customers whose first day with MRR > 0 falls in the month.
-- @col reactivated_customers: customers with at least one reactivation in the month.
-- @col logo_churn_rate: churned_customers / starting_customers.
-- @col cohort_ending_mrr: the cohort's summed MRR at the end of the month (customers who joined during the month are not in it); numerator of net_revenue_retention.
-- @col retained_mrr: sum over the cohort of the lesser of each customer's MRR at the end and at the start; numerator of gross_revenue_retention.
-- @col net_revenue_retention: cohort_ending_mrr / starting_mrr (NRR): expansion counts, new customers do not.
-- @col gross_revenue_retention: retained_mrr / starting_mrr (GRR), between 0 and 1: expansion never offsets churn and contraction.
-- @col gross_revenue_churn_rate: 1 - gross_revenue_retention.
-- @col quick_ratio: (new_mrr + expansion_mrr + reactivation_mrr) / (contraction_mrr + churned_mrr); null when nothing was lost.
with months as (
    select integration, currency, month, as_of_date, mrr as ending_mrr, paying_customers
    from marts.mrr_monthly
),

month_ends as (
    select integration, currency, customer, month, mrr
    from marts.customer_mrr_monthly
),

cohorts as (
    -- the cohort of month M: customers with MRR > 0 at the end of M-1; where each one is at the end of M
    select
        s.integration,
        s.currency,
        (s.month + interval 1 month)::date as month,
        count(*) as starting_customers,
        count(*) filter (where e.mrr is null) as churned_customers,
        sum(s.mrr) as starting_mrr,
        sum(coalesce(e.mrr, 0)) as cohort_ending_mrr,
        sum(least(coalesce(e.mrr, 0), s.mrr)) as retained_mrr
    from month_ends as s
    left join month_ends as e
        on e.integration = s.integration and e.currency = s.currency and e.customer = s.customer
        and e.month = (s.month + interval 1 month)::date
    group by all
),

movements as (
    select
        integration,
        currency,
        date_trunc('month', date)::date as month,
        sum(amount) filter (where movement = 'new') as new_mrr,
        sum(amount) filter (where movement = 'expansion') as expansion_mrr,
        sum(amount) filter (where movement = 'reactivation') as reactivation_mrr,
        sum(amount) filter (where movement = 'contraction') as contraction_mrr,
        sum(amount) filter (where movement = 'churned') as churned_mrr,
        count(distinct customer) filter (where movement = 'new') as new_customers,
        count(distinct customer) filter (where movement = 'reactivation') as reactivated_customers
    from metrics.mrr_customer_movements
    group by all
),

kpis as (
    select
        m.integration,
        m.currency,
        m.month,
        m.as_of_date,
        coalesce(c.starting_mrr, 0)::decimal(18, 2) as starting_mrr,
        m.ending_mrr::decimal(18, 2) as ending_mrr,
        coalesce(v.new_mrr, 0)::decimal(18, 2) as new_mrr,
        coalesce(v.expansion_mrr, 0)::decimal(18, 2) as expansion_mrr,
        coalesce(v.reactivation_mrr, 0)::decimal(18, 2) as reactivation_mrr,
        coalesce(v.contraction_mrr, 0)::decimal(18, 2) as contraction_mrr,
        coalesce(v.churned_mrr, 0)::decimal(18, 2) as churned_mrr,
        m.paying_customers,
        coalesce(c.starting_customers, 0) as starting_customers,
        coalesce(c.churned_customers, 0) as churned_customers,
        coalesce(v.new_customers, 0) as new_customers,
        coalesce(v.reactivated_customers, 0) as reactivated_customers,
        coalesce(c.cohort_ending_mrr, 0)::decimal(18, 2) as cohort_ending_mrr,
        coalesce(c.retained_mrr, 0)::decimal(18, 2) as retained_mrr
    from months as m
    left join cohorts as c
        on c.integration = m.integration and c.currency = m.currency and c.month = m.month
    left join movements as v
        on v.integration = m.integration and v.currency = m.currency and v.month = m.month
),

exact as (
    -- integer cents, so that every rate is the exact quotient rounded half-up: (2 × 10⁴ × a + b) // (2 × b)
    select
        *,
        (starting_mrr * 100)::hugeint as start_cents,
        (ending_mrr * 100)::hugeint as end_cents,
        (cohort_ending_mrr * 100)::hugeint as cohort_end_cents,
        (retained_mrr * 100)::hugeint as retained_cents,
        ((new_mrr + expansion_mrr + reactivation_mrr) * 100)::hugeint as gained_cents,
        ((contraction_mrr + churned_mrr) * 100)::hugeint as lost_cents
    from kpis
)

select
    integration,
    currency,
    month,
    as_of_date,
    starting_mrr,
    ending_mrr,
    (ending_mrr - starting_mrr)::decimal(18, 2) as net_new_mrr,
    new_mrr,
    expansion_mrr,
    reactivation_mrr,
    contraction_mrr,
    churned_mrr,
    paying_customers::integer as paying_customers,
    case when paying_customers > 0
        then ((2 * end_cents + paying_customers) // (2 * paying_customers) * 0.01)::decimal(18, 2)
    end as arpa,
    starting_customers::integer as starting_customers,
    churned_customers::integer as churned_customers,
    new_customers::integer as new_customers,
    reactivated_customers::integer as reactivated_customers,
    case when starting_customers > 0
        then ((20000 * churned_customers::hugeint + starting_customers) // (2 * starting_customers) * 0.0001)::decimal(18, 4)
    end as logo_churn_rate,
    cohort_ending_mrr,
    retained_mrr,
    case when start_cents > 0
        then ((20000 * cohort_end_cents + start_cents) // (2 * start_cents) * 0.0001)::decimal(18, 4)
    end as net_revenue_retention,
    case when start_cents > 0
        then ((20000 * retained_cents + start_cents) // (2 * start_cents) * 0.0001)::decimal(18, 4)
    end as gross_revenue_retention,
    case when start_cents > 0
        then (1 - (20000 * retained_cents + start_cents) // (2 * start_cents) * 0.0001)::decimal(18, 4)
    end as gross_revenue_churn_rate,
    case when lost_cents > 0
        then ((20000 * gained_cents + lost_cents) // (2 * lost_cents) * 0.0001)::decimal(18, 4)
    end as quick_ratio
from exact
order by integration, currency, month
