-- Daily MRR movements per product, price and billing interval: each customer's movement of metrics.mrr_customer_movements shared out, to the cent, over the subscription items behind it.
-- test: unique(integration, currency, date, product, price)
-- test: not_null(integration, currency, date, product, product_name, price, billing_interval, new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr, net_new_mrr)
-- test: expression(least(new_mrr, expansion_mrr, reactivation_mrr, contraction_mrr, churned_mrr) >= 0) as movements_not_negative
-- test: expression(net_new_mrr = new_mrr + expansion_mrr + reactivation_mrr - contraction_mrr - churned_mrr) as net_is_the_movements
--
-- Which items a customer's movement on day D belongs to (the first rule that finds an item of the customer in that
-- currency with a list price above 0):
--   1. the subscriptions that started counting on D (new, expansion, reactivation) or stopped on D (contraction,
--      churned), per marts.subscription_periods;
--   2. else the subscriptions counting at the end of D (increases) or of D-1 (decreases): a quantity or price change;
--   3. else any of the customer's subscriptions in that currency (history rebuilt from invoices or events that the
--      subscriptions' own dates do not show);
--   4. else product, price and billing_interval 'unknown'.
-- The amount is shared in proportion to each item's list-price MRR (the items' current price and quantity, before
-- discounts, as marts.mrr_by_product prices them), in whole cents: each share is rounded down and the cents left
-- over go one each to the largest remainders (then by product, price), so the shares of a movement add up to it
-- exactly and the table sums to metrics.mrr_daily's movements to the cent. Simplification: Stripe returns each
-- subscription's current items only, so a subscription that moved from one product to another counts under the
-- product it has now for its whole history.
-- @col integration: the configured account's name
-- @col currency: lowercase ISO code, as Stripe writes it
-- @col date: UTC day the movements happened (into the end of that day from the day before)
-- @col product: Stripe product ID, or 'unknown' when no item could be found
-- @col product_name: the product's name (its ID when it has none)
-- @col price: Stripe price ID, or 'unknown'
-- @col billing_interval: monthly, quarterly, semiannual, yearly, weekly, daily, or 'every N <interval>s'
-- @col new_mrr: the product and price's share of the day's new MRR (major units)
-- @col expansion_mrr: share of the day's expansion MRR
-- @col reactivation_mrr: share of the day's reactivation MRR
-- @col contraction_mrr: share of the day's contraction MRR (a positive amount)
-- @col churned_mrr: share of the day's churned MRR (a positive amount)
-- @col net_new_mrr: new + expansion + reactivation - contraction - churned
with weighted_items as (
    -- weight = list-price MRR in minor units (marts.subscription_item_mrr), as a whole number of millionths (exact
    -- integer shares below)
    select
        integration,
        customer,
        currency,
        subscription,
        counts_from,
        counts_until,
        price,
        product,
        case
            when recurring_interval = 'month' and recurring_interval_count = 1 then 'monthly'
            when recurring_interval = 'month' and recurring_interval_count = 3 then 'quarterly'
            when recurring_interval = 'month' and recurring_interval_count = 6 then 'semiannual'
            when recurring_interval = 'month' and recurring_interval_count = 12 then 'yearly'
            when recurring_interval = 'year' and recurring_interval_count = 1 then 'yearly'
            when recurring_interval = 'week' and recurring_interval_count = 1 then 'weekly'
            when recurring_interval = 'day' and recurring_interval_count = 1 then 'daily'
            else 'every ' || recurring_interval_count || ' ' || recurring_interval || 's'
        end as billing_interval,
        cast(coalesce(list_mrr_minor, 0) * 1000000 as hugeint) as weight
    from marts.subscription_item_mrr
    where customer is not null
),

moves as (
    select
        integration,
        currency,
        customer,
        date,
        movement,
        cast(round(amount * 100) as hugeint) as cents,
        movement in ('new', 'expansion', 'reactivation') as increase
    from metrics.mrr_customer_movements
    where amount <> 0
),

candidates as (
    select
        m.integration,
        m.currency,
        m.customer,
        m.date,
        m.movement,
        m.cents,
        w.product,
        w.price,
        w.billing_interval,
        w.weight,
        case
            when m.increase and w.counts_from::date = m.date then 1
            when not m.increase and w.counts_until::date = m.date then 1
            when m.increase and w.counts_from < m.date + 1 and (w.counts_until is null or w.counts_until >= m.date + 1)
                then 2
            when not m.increase and w.counts_from < m.date and (w.counts_until is null or w.counts_until >= m.date)
                then 2
            else 3
        end as rule
    from moves as m
    join weighted_items as w
        on w.integration = m.integration and w.customer = m.customer and w.currency = m.currency
    where w.weight > 0
),

chosen as (
    select
        integration, currency, customer, date, movement, cents, product, price, billing_interval,
        sum(weight) as weight
    from (
        select *, min(rule) over (partition by integration, currency, customer, date) as first_rule
        from candidates
    )
    where rule = first_rule
    group by integration, currency, customer, date, movement, cents, product, price, billing_interval
),

floored as (
    select
        *,
        cents * weight // sum(weight) over movement_rows as floor_cents,
        cents * weight % sum(weight) over movement_rows as remainder
    from chosen
    window movement_rows as (partition by integration, currency, customer, date)
),

shares as (
    select
        integration, currency, customer, date, movement, product, price, billing_interval,
        floor_cents + case
            when row_number() over movement_rows
                 <= cents - sum(floor_cents) over (partition by integration, currency, customer, date) then 1
            else 0
        end as share_cents
    from floored
    window movement_rows as (partition by integration, currency, customer, date order by remainder desc, product, price)
    union all
    select
        m.integration, m.currency, m.customer, m.date, m.movement,
        'unknown' as product, 'unknown' as price, 'unknown' as billing_interval, m.cents as share_cents
    from moves as m
    anti join chosen as c
        on c.integration = m.integration and c.currency = m.currency and c.customer = m.customer and c.date = m.date
),

daily as (
    select
        integration,
        currency,
        date,
        product,
        price,
        billing_interval,
        sum(case when movement = 'new' then share_cents else 0 end) as new_cents,
        sum(case when movement = 'expansion' then share_cents else 0 end) as expansion_cents,
        sum(case when movement = 'reactivation' then share_cents else 0 end) as reactivation_cents,
        sum(case when movement = 'contraction' then share_cents else 0 end) as contraction_cents,
        sum(case when movement = 'churned' then share_cents else 0 end) as churned_cents
    from shares
    group by integration, currency, date, product, price, billing_interval
)

select
    d.integration,
    d.currency,
    d.date,
    d.product,
    coalesce(pr.name, d.product) as product_name,
    d.price,
    d.billing_interval,
    (d.new_cents::decimal(38, 0) * 0.01)::decimal(18, 2) as new_mrr,
    (d.expansion_cents::decimal(38, 0) * 0.01)::decimal(18, 2) as expansion_mrr,
    (d.reactivation_cents::decimal(38, 0) * 0.01)::decimal(18, 2) as reactivation_mrr,
    (d.contraction_cents::decimal(38, 0) * 0.01)::decimal(18, 2) as contraction_mrr,
    (d.churned_cents::decimal(38, 0) * 0.01)::decimal(18, 2) as churned_mrr,
    ((d.new_cents + d.expansion_cents + d.reactivation_cents - d.contraction_cents - d.churned_cents)::decimal(38, 0)
        * 0.01)::decimal(18, 2) as net_new_mrr
from daily as d
left join stripe.products as pr
    on pr.integration = d.integration and pr.id = d.product
order by d.integration, d.currency, d.date, d.product, d.price
