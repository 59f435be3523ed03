-- Today's MRR by product and price (plan) per integration and currency, at list prices before discounts.
-- test: unique(integration, currency, product, price)
-- test: not_null(integration, currency, product, price, as_of_date, subscriptions, quantity, mrr_before_discounts)
-- test: expression(mrr_before_discounts >= 0) as mrr_not_negative
--
-- Items of the subscriptions counting now (marts.subscription_periods at the run's time), priced as docs/mrr.md
-- section 3 says: per_unit and tiered (volume, graduated) prices, transform_quantity, normalized to a month
-- (month 1/n, year 1/(12n), week 52/12/n, day 365/12/n), minor units converted with Stripe's zero- and
-- three-decimal currency lists (https://docs.stripe.com/currencies). Metered (usage-based) items have no MRR and
-- are left out.
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
with counting as (
    select integration, subscription
    from marts.subscription_periods
    where counts_from <= $as_of and (counts_until is null or counts_until > $as_of)
),

items as (
    select
        i.integration,
        i.subscription,
        i.price,
        p.product,
        p.currency,
        p.billing_scheme,
        p.tiers_mode,
        coalesce(p.unit_amount_decimal, p.unit_amount) as unit_amount,
        p.recurring_interval,
        coalesce(p.recurring_interval_count, 1) as interval_count,
        coalesce(i.quantity, 1) as quantity,
        case
            when p.transform_quantity_divide_by is null then coalesce(i.quantity, 1)
            when p.transform_quantity_round = 'down' then floor(coalesce(i.quantity, 1) / p.transform_quantity_divide_by)
            else ceil(coalesce(i.quantity, 1) / p.transform_quantity_divide_by)
        end::bigint as billed_quantity
    from stripe.subscription_items as i
    join counting as c
        on c.integration = i.integration and c.subscription = i.subscription
    join stripe.prices as p
        on p.integration = i.integration and p.id = i.price
    where coalesce(p.recurring_usage_type, 'licensed') = 'licensed'
        and p.recurring_interval is not null
),

tiers as (
    select
        integration,
        price,
        tier_index,
        up_to,
        coalesce(lag(up_to) over (partition by integration, price order by tier_index), 0) as above,
        coalesce(unit_amount_decimal, unit_amount, 0) as unit_amount,
        coalesce(flat_amount_decimal, flat_amount, 0) as flat_amount
    from stripe.price_tiers
),

tiered_amounts as (
    -- volume: every unit at the tier the quantity falls in; graduated: each tier prices its own share.
    select
        i.integration,
        i.subscription,
        i.price,
        sum(
            case
                when i.tiers_mode = 'volume' then
                    case when i.billed_quantity > t.above and (t.up_to is null or i.billed_quantity <= t.up_to)
                        then t.unit_amount * i.billed_quantity + t.flat_amount else 0 end
                when i.billed_quantity > t.above then
                    t.unit_amount * (least(i.billed_quantity, coalesce(t.up_to, i.billed_quantity)) - t.above)
                    + t.flat_amount
                else 0
            end
        ) as period_amount
    from items as i
    join tiers as t
        on t.integration = i.integration and t.price = i.price
    where i.billing_scheme = 'tiered'
    group by i.integration, i.subscription, i.price
),

item_mrr as (
    select
        i.integration,
        i.currency,
        i.product,
        i.price,
        i.subscription,
        i.quantity,
        cast(
            case when i.billing_scheme = 'tiered' then coalesce(a.period_amount, 0)
                 else i.unit_amount * i.billed_quantity end
            * case i.recurring_interval when 'week' then 52 when 'day' then 365 else 1 end
            / (case i.recurring_interval when 'year' then 12 when 'week' then 12 when 'day' then 12 else 1 end
               * i.interval_count)
            as decimal(38, 6)
        ) as mrr_minor,
        case
            when i.currency in ('bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd',
                                'vuv', 'xaf', 'xof', 'xpf') then 1
            when i.currency in ('bhd', 'jod', 'kwd', 'omr', 'tnd') then 0.001
            else 0.01
        end::decimal(4, 3) as minor_unit
    from items as i
    left join tiered_amounts as a
        on a.integration = i.integration and a.subscription = i.subscription and a.price = i.price
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
