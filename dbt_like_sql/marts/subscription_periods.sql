-- When each subscription counts as paying, from its own dates (a simplified docs/mrr.md section 2), for customer churn and trial conversion.
-- test: unique(integration, subscription)
-- test: not_null(integration, subscription, customer, currency, status)
-- test: expression(counts_from is null or counts_until is null or counts_until > counts_from) as period_not_empty
--
-- One row per subscription. A subscription counts from counts_from (inclusive) until counts_until (exclusive,
-- null = still counting); counts_from null = it never counted. The rules of docs/mrr.md section 2, read from the
-- subscription's current state only (metrics.mrr_daily also uses events and invoice lines, so it can date changes
-- this table cannot):
-- - incomplete and incomplete_expired subscriptions never count (the first payment was never made);
-- - a subscription without a current licensed item at a price above 0 never counts (it has no MRR);
-- - it starts counting at start_date, or at trial_end after a trial;
-- - it stops at ended_at when it ended at once; a scheduled cancellation (cancel_at_period_end, cancel_at) stops
--   it at canceled_at, else at cancel_at (the default churn_recognition: canceled_at; the period_end option is not
--   applied here); an unpaid or paused subscription stops at the start of its current, unpaid period.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col subscription: Stripe subscription id.
-- @col customer: Stripe customer id.
-- @col currency: lowercase ISO code of the subscription.
-- @col status: the subscription's current Stripe status.
-- @col counts_from: when it starts counting as paying (UTC, inclusive); null if it never counted.
-- @col counts_until: when it stops counting (UTC, exclusive); null while it still counts.
with paid_items as (
    select distinct i.integration, i.subscription
    from stripe.subscription_items as i
    join stripe.prices as p
        on p.integration = i.integration and p.id = i.price
    where coalesce(p.recurring_usage_type, 'licensed') = 'licensed'
        and coalesce(i.quantity, 1) > 0
        and (p.billing_scheme = 'tiered' or coalesce(p.unit_amount_decimal, p.unit_amount) > 0)
),

bounds as (
    select
        s.integration,
        s.id as subscription,
        s.customer,
        s.currency,
        s.status,
        case
            when s.status in ('incomplete', 'incomplete_expired') or p.subscription is null then null
            else greatest(s.start_date, s.trial_end)
        end as starts,
        least(
            s.ended_at,
            case when s.status = 'canceled' then s.canceled_at end,
            case when s.cancel_at_period_end or s.cancel_at is not null then coalesce(s.canceled_at, s.cancel_at) end,
            case when s.status in ('unpaid', 'paused') then s.current_period_start end
        ) as stops
    from stripe.subscriptions as s
    left join paid_items as p
        on p.integration = s.integration and p.subscription = s.id
    -- a subscription without customer, currency or status is unusable (metrics.mrr_unusable_rows says why);
    -- leaving it out keeps one bad object from blocking every refresh
    where s.customer is not null and s.currency is not null and s.status is not null
)

select
    integration,
    subscription,
    customer,
    currency,
    status,
    case when stops is null or stops > starts then starts end as counts_from,
    case when stops is null or stops > starts then stops end as counts_until
from bounds
order by integration, subscription
