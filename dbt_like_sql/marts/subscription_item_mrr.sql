-- Every subscription item at a licensed recurring price with its list-price MRR before discounts, exact to a millionth of the currency's minor unit: the item pricing that marts.mrr_by_product and marts.mrr_drivers_daily share.
-- test: unique(integration, subscription, price)
-- test: not_null(integration, subscription, currency, product, price, quantity, billed_quantity, recurring_interval, recurring_interval_count, minor_unit)
--
-- Items of the subscriptions' current state (Stripe returns each subscription's current items only), priced as
-- docs/mrr.md section 3 says: per_unit and tiered (volume, graduated) prices, transform_quantity, normalized to a
-- month (month 1/n, year 1/(12n), week 52/12/n, day 365/12/n). Metered (usage-based) items have no MRR and are left
-- out. Discounts (section 4) are not applied: coupons apply to a whole subscription or customer, not to one item.
-- Items are listed as Stripe gives them, also those of subscriptions that never counted: a malformed price (a
-- negative amount) shows here as it is and is checked where it would count (marts.mrr_by_product's
-- mrr_not_negative, metrics.mrr_daily's checks), so it never blocks a refresh from this table.
-- counts_from and counts_until say when the subscription counts as paying (marts.subscription_periods).
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col subscription: Stripe subscription id.
-- @col customer: Stripe customer id of the subscription.
-- @col currency: the price's lowercase ISO currency code.
-- @col product: Stripe product id.
-- @col price: Stripe price id (the plan).
-- @col quantity: the item's quantity (1 when Stripe gives none).
-- @col billed_quantity: the quantity billed: quantity after the price's transform_quantity (divide, round up or down).
-- @col recurring_interval: day | week | month | year.
-- @col recurring_interval_count: how many intervals one billing period lasts.
-- @col counts_from: when the subscription starts counting as paying (UTC, inclusive); null if it never counted.
-- @col counts_until: when it stops counting (UTC, exclusive); null while it still counts.
-- @col list_mrr_minor: the item's MRR at list price in the currency's minor unit (cents for usd, yen for jpy), unrounded to 6 decimals; null for a per-unit price without an amount.
-- @col minor_unit: one minor unit in major units: 0.01, or 1 for zero-decimal and 0.001 for three-decimal currencies (https://docs.stripe.com/currencies).
with items as (
    select
        i.integration,
        i.subscription,
        s.customer,
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
        end::bigint as billed_quantity,
        sp.counts_from,
        sp.counts_until
    from stripe.subscription_items as i
    join stripe.prices as p
        on p.integration = i.integration and p.id = i.price
    left join stripe.subscriptions as s
        on s.integration = i.integration and s.id = i.subscription
    left join marts.subscription_periods as sp
        on sp.integration = i.integration and sp.subscription = i.subscription
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
)

select
    i.integration,
    i.subscription,
    i.customer,
    i.currency,
    i.product,
    i.price,
    i.quantity::bigint as quantity,
    i.billed_quantity,
    i.recurring_interval,
    i.interval_count::bigint as recurring_interval_count,
    i.counts_from,
    i.counts_until,
    cast(
        case when i.billing_scheme = 'tiered' then coalesce(a.period_amount, 0)
             else i.unit_amount * i.billed_quantity end
        * case i.recurring_interval when 'week' then 52 when 'day' then 365 else 1 end
        / (case i.recurring_interval when 'year' then 12 when 'week' then 12 when 'day' then 12 else 1 end
           * i.interval_count)
        as decimal(38, 6)
    ) as list_mrr_minor,
    case
        when i.currency in ('bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd',
                            'vuv', 'xaf', 'xof', 'xpf') then 1
        when i.currency in ('bhd', 'jod', 'kwd', 'omr', 'tnd') then 0.001
        else 0.01
    end::decimal(4, 3) as minor_unit
from items as i
left join tiered_amounts as a
    on a.integration = i.integration and a.subscription = i.subscription and a.price = i.price
order by i.integration, i.subscription, i.price
