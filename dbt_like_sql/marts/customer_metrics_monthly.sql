-- Monthly customer metrics per integration and currency: paying customers, ARPA, logo churn, revenue churn and net revenue retention.
-- test: unique(integration, currency, month)
-- test: not_null(integration, currency, month, paying_customers, mrr, customers_at_start, customers_churned)
-- test: expression(customers_churned <= customers_at_start) as churned_among_customers_at_start
-- test: expression(logo_churn_rate is null or logo_churn_rate between 0 and 1) as logo_churn_rate_is_a_share
-- test: expression(revenue_churn_rate is null or revenue_churn_rate >= 0) as revenue_churn_rate_not_negative
-- test: expression(net_revenue_retention is null or net_revenue_retention >= 0) as net_revenue_retention_not_negative
--
-- All rates are for one calendar month (not annualized), as fractions (0.05 = 5 %), rounded to 4 decimals,
-- null when their denominator is 0. "Start" of month M = end of the last day of M-1; "end" = end of M's last day,
-- or now for the current month.
-- paying_customers       customers with MRR > 0 at the end of the month (metrics.mrr_daily).
-- mrr                    MRR at the end of the month.
-- arpa                   average revenue per account: mrr / paying_customers, rounded to 0.01.
-- customers_at_start     customers with MRR > 0 at the start of the month (= paying_customers of the month before).
-- customers_churned      of those, the ones with MRR 0 at the end of the month (metrics.mrr_customer_movements,
--                        the customer rows behind metrics.mrr_daily's movements). A customer who leaves and comes
--                        back within the month is not churned.
-- logo_churn_rate        customers_churned / customers_at_start.
-- revenue_churn_rate     gross MRR churn: (churned_mrr + contraction_mrr) / starting_mrr (marts.mrr_bridge_monthly).
-- net_revenue_retention  MRR kept and grown from the customers of the start of the month, reactivations included:
--                        (starting_mrr + expansion_mrr + reactivation_mrr - contraction_mrr - churned_mrr)
--                        / starting_mrr, which is (ending_mrr - new_mrr) / starting_mrr.
with months as (
    select
        integration,
        currency,
        month,
        (month - interval 1 day)::date as start_day,
        as_of_date as end_day
    from marts.mrr_monthly
),

customers as (
    select distinct integration, currency, customer
    from metrics.mrr_customer_movements
),

customer_months as (
    -- each customer's MRR at the start and at the end of each month: its latest change on or before that day
    select m.integration, m.currency, m.month, c.customer, s.mrr as start_mrr, e.mrr as end_mrr
    from months as m
    join customers as c
        on c.integration = m.integration and c.currency = m.currency
    asof left join metrics.mrr_customer_movements as s
        on s.integration = c.integration and s.currency = c.currency and s.customer = c.customer
        and m.start_day >= s.date
    asof left join metrics.mrr_customer_movements as e
        on e.integration = c.integration and e.currency = c.currency and e.customer = c.customer
        and m.end_day >= e.date
),

churn as (
    select
        integration,
        currency,
        month,
        count(*) filter (where start_mrr > 0) as customers_at_start,
        count(*) filter (where start_mrr > 0 and coalesce(end_mrr, 0) = 0) as customers_churned
    from customer_months
    group by integration, currency, month
)

select
    b.integration,
    b.currency,
    b.month,
    m.paying_customers,
    b.ending_mrr as mrr,
    round(b.ending_mrr / nullif(m.paying_customers, 0), 2)::decimal(18, 2) as arpa,
    coalesce(c.customers_at_start, 0)::integer as customers_at_start,
    coalesce(c.customers_churned, 0)::integer as customers_churned,
    round(c.customers_churned / nullif(c.customers_at_start, 0), 4) as logo_churn_rate,
    round((b.churned_mrr + b.contraction_mrr) / nullif(b.starting_mrr, 0), 4) as revenue_churn_rate,
    round(
        (b.starting_mrr + b.expansion_mrr + b.reactivation_mrr - b.contraction_mrr - b.churned_mrr)
        / nullif(b.starting_mrr, 0),
        4
    ) as net_revenue_retention
from marts.mrr_bridge_monthly as b
join marts.mrr_monthly as m
    on m.integration = b.integration and m.currency = b.currency and m.month = b.month
left join churn as c
    on c.integration = b.integration and c.currency = b.currency and c.month = b.month
order by b.integration, b.currency, b.month
