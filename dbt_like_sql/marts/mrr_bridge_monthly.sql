-- Monthly MRR bridge per integration and currency: starting MRR, new, expansion, reactivation, contraction, churned, ending MRR.
-- test: unique(integration, currency, month)
-- test: not_null(integration, currency, month, starting_mrr, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, ending_mrr)
-- test: expression(starting_mrr + new_mrr + expansion_mrr + reactivation_mrr - contraction_mrr - churned_mrr = ending_mrr) as movements_reconcile
-- test: expression(least(new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr) >= 0) as movements_not_negative
--
-- The movements are the sums of metrics.mrr_daily's daily movements over the days of the month. As the daily
-- movements reconcile day by day and the series has no gaps, the month reconciles to the cent:
-- starting + new + expansion + reactivation - contraction - churned = ending.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: lowercase ISO code as Stripe writes it; currencies are never mixed.
-- @col month: first day of the calendar month (UTC).
-- @col starting_mrr: MRR at the end of the previous month (0 in the first month of the currency's series).
-- @col new_mrr: MRR of customers whose first paying day falls in the month.
-- @col expansion_mrr: increases of customers already paying, summed over the days of the month.
-- @col reactivation_mrr: MRR of customers who paid before, stopped, and paid again during the month.
-- @col contraction_mrr: decreases of customers who keep paying, summed over the days of the month (positive).
-- @col churned_mrr: MRR of customers who stopped paying during the month (positive).
-- @col ending_mrr: MRR at the end of the month; today for the current month (= marts.mrr_monthly.mrr).
-- @col net_new_mrr: ending_mrr - starting_mrr.
with movements as (
    select
        integration,
        currency,
        date_trunc('month', date)::date as month,
        sum(new_mrr) as new_mrr,
        sum(expansion_mrr) as expansion_mrr,
        sum(reactivation_mrr) as reactivation_mrr,
        sum(contraction_mrr) as contraction_mrr,
        sum(churned_mrr) as churned_mrr
    from metrics.mrr_daily
    group by integration, currency, month
),

month_ends as (
    select
        integration,
        currency,
        month,
        coalesce(lag(mrr) over (partition by integration, currency order by month), 0) as starting_mrr,
        mrr as ending_mrr
    from marts.mrr_monthly
)

select
    e.integration,
    e.currency,
    e.month,
    e.starting_mrr::decimal(18, 2) as starting_mrr,
    m.new_mrr::decimal(18, 2) as new_mrr,
    m.expansion_mrr::decimal(18, 2) as expansion_mrr,
    m.reactivation_mrr::decimal(18, 2) as reactivation_mrr,
    m.contraction_mrr::decimal(18, 2) as contraction_mrr,
    m.churned_mrr::decimal(18, 2) as churned_mrr,
    e.ending_mrr::decimal(18, 2) as ending_mrr,
    (e.ending_mrr - e.starting_mrr)::decimal(18, 2) as net_new_mrr
from month_ends as e
join movements as m
    on m.integration = e.integration and m.currency = e.currency and m.month = e.month
order by e.integration, e.currency, e.month
