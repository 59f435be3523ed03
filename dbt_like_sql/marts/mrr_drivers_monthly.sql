-- Monthly MRR bridge per product and billing interval: starting MRR, new, expansion, reactivation, contraction, churned, ending MRR; the rows of a month add up to marts.mrr_bridge_monthly to the cent.
-- test: unique(integration, currency, month, product, billing_interval)
-- test: not_null(integration, currency, month, product, product_name, billing_interval, starting_mrr, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, ending_mrr, net_new_mrr)
-- test: expression(starting_mrr + new_mrr + expansion_mrr + reactivation_mrr - contraction_mrr - churned_mrr = ending_mrr) as movements_reconcile
-- test: expression(least(new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr) >= 0) as movements_not_negative
--
-- The movements are marts.mrr_drivers_daily's (each customer's movement shared out over its subscription items, to
-- the cent) summed over the days of the month. A segment's MRR is the running sum of its movements since the
-- currency's first day, so ending_mrr adds up, over the segments of a month, to the month's ending MRR of
-- marts.mrr_bridge_monthly (the asset check sums_to_bridge compares every column of every month). A segment's
-- MRR is its share of the customers' MRR, so like marts.mrr_drivers_daily it counts a subscription under the
-- product and price it has now. Months where a segment had no MRR and no movement have no row.
-- @col integration: the configured account's name
-- @col currency: lowercase ISO code, as Stripe writes it
-- @col month: first day of the calendar month (UTC)
-- @col product: Stripe product ID, or 'unknown' when no subscription item could be found for a movement
-- @col product_name: the product's name (its ID when it has none)
-- @col billing_interval: monthly, quarterly, semiannual, yearly, weekly, daily, or 'every N <interval>s'
-- @col starting_mrr: the segment's MRR at the end of the previous month
-- @col new_mrr: the segment's share of the month's new MRR
-- @col expansion_mrr: share of the month's expansion MRR
-- @col reactivation_mrr: share of the month's reactivation MRR
-- @col contraction_mrr: share of the month's contraction MRR (a positive amount)
-- @col churned_mrr: share of the month's churned MRR (a positive amount)
-- @col ending_mrr: the segment's MRR at the end of the month (today for the current month)
-- @col net_new_mrr: ending_mrr - starting_mrr
with monthly as (
    select
        integration,
        currency,
        date_trunc('month', date)::date as month,
        product,
        billing_interval,
        any_value(product_name) as product_name,
        sum(new_mrr) as new_mrr,
        sum(expansion_mrr) as expansion_mrr,
        sum(reactivation_mrr) as reactivation_mrr,
        sum(contraction_mrr) as contraction_mrr,
        sum(churned_mrr) as churned_mrr
    from marts.mrr_drivers_daily
    group by integration, currency, month, product, billing_interval
),

segments as (
    select integration, currency, product, billing_interval, any_value(product_name) as product_name,
        min(month) as first_month
    from monthly
    group by integration, currency, product, billing_interval
),

currency_months as (
    select integration, currency, date_trunc('month', date)::date as month
    from metrics.mrr_daily
    group by integration, currency, month
),

spine as (
    select s.integration, s.currency, s.product, s.product_name, s.billing_interval, c.month
    from segments as s
    join currency_months as c
        on c.integration = s.integration and c.currency = s.currency and c.month >= s.first_month
),

filled as (
    select
        sp.integration,
        sp.currency,
        sp.month,
        sp.product,
        sp.product_name,
        sp.billing_interval,
        coalesce(m.new_mrr, 0) as new_mrr,
        coalesce(m.expansion_mrr, 0) as expansion_mrr,
        coalesce(m.reactivation_mrr, 0) as reactivation_mrr,
        coalesce(m.contraction_mrr, 0) as contraction_mrr,
        coalesce(m.churned_mrr, 0) as churned_mrr,
        coalesce(m.new_mrr + m.expansion_mrr + m.reactivation_mrr - m.contraction_mrr - m.churned_mrr, 0) as net
    from spine as sp
    left join monthly as m
        on m.integration = sp.integration and m.currency = sp.currency and m.month = sp.month
        and m.product = sp.product and m.billing_interval = sp.billing_interval
),

bridged as (
    select
        *,
        sum(net) over (partition by integration, currency, product, billing_interval order by month) as ending_mrr
    from filled
)

select
    integration,
    currency,
    month,
    product,
    product_name,
    billing_interval,
    (ending_mrr - net)::decimal(18, 2) as starting_mrr,
    new_mrr::decimal(18, 2) as new_mrr,
    expansion_mrr::decimal(18, 2) as expansion_mrr,
    reactivation_mrr::decimal(18, 2) as reactivation_mrr,
    contraction_mrr::decimal(18, 2) as contraction_mrr,
    churned_mrr::decimal(18, 2) as churned_mrr,
    ending_mrr::decimal(18, 2) as ending_mrr,
    net::decimal(18, 2) as net_new_mrr
from bridged
where ending_mrr <> 0 or ending_mrr - net <> 0 or new_mrr <> 0 or expansion_mrr <> 0 or reactivation_mrr <> 0
    or contraction_mrr <> 0 or churned_mrr <> 0
order by integration, currency, month, product, billing_interval
