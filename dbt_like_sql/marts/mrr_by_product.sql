-- Today's MRR by product and price (plan) per integration and currency, at list prices before discounts.
-- test: unique(integration, currency, product, price)
-- test: not_null(integration, currency, product, price, as_of_date, subscriptions, quantity, mrr_before_discounts)
-- test: expression(mrr_before_discounts >= 0) as mrr_not_negative
--
-- Items of the subscriptions counting now (marts.subscription_periods at the run's time), at their list-price MRR
-- from marts.subscription_item_mrr (docs/mrr.md section 3: per_unit and tiered prices, transform_quantity, normalized
-- to a month), minor units converted with Stripe's zero- and three-decimal currency lists
-- (https://docs.stripe.com/currencies). Metered (usage-based) items have no MRR and are left out.
-- Simplifications relative to docs/mrr.md: discounts (section 4) are not applied, because coupons apply to a
-- whole subscription or customer and have no single product to land on; amounts are rounded per row, not per
-- customer; whether a subscription counts comes from its own dates (see marts.subscription_periods). So the
-- total of a currency is the list-price MRR and can be above metrics.mrr_daily's mrr by the discounts.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: the price's lowercase ISO currency code.
-- @col product: Stripe product id.
-- @col product_name: the product's name (its id when it has none).
-- @col price: Stripe price id (the plan).
-- @col price_nickname: the price's nickname in Stripe, if any.
-- @col recurring_interval: day | week | month | year.
-- @col recurring_interval_count: how many intervals one billing period lasts.
-- @col as_of_date: the day of the run (UTC): the subscriptions counting now.
-- @col subscriptions: counting subscriptions with an item at this price.
-- @col quantity: the summed quantity of those items.
-- @col mrr_before_discounts: their MRR at list price, normalized to a month, rounded to 0.01 major units.
with item_mrr as (
    -- items of the subscriptions counting now, each priced once in marts.subscription_item_mrr
    select integration, currency, product, price, subscription, quantity, list_mrr_minor as mrr_minor, minor_unit
    from marts.subscription_item_mrr
    where counts_from <= $as_of and (counts_until is null or counts_until > $as_of)
)

select
    m.integration,
    m.currency,
    m.product,
    coalesce(pr.name, m.product) as product_name,
    m.price,
    p.nickname as price_nickname,
    p.recurring_interval,
    coalesce(p.recurring_interval_count, 1) as recurring_interval_count,
    $as_of::date as as_of_date,
    count(distinct m.subscription)::integer as subscriptions,
    sum(m.quantity)::bigint as quantity,
    -- try_cast: an absurd amount becomes null and fails the declared not_null test by name, not the run
    try_cast(round(sum(m.mrr_minor * m.minor_unit), 2) as decimal(18, 2)) as mrr_before_discounts
from item_mrr as m
join stripe.prices as p
    on p.integration = m.integration and p.id = m.price
left join stripe.products as pr
    on pr.integration = m.integration and pr.id = m.product
group by m.integration, m.currency, m.product, pr.name, m.price, p.nickname, p.recurring_interval, p.recurring_interval_count
order by m.integration, m.currency, mrr_before_discounts desc, m.product, m.price
