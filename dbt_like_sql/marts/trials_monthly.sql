-- Trials started, ended and converted to paying subscriptions per integration and month.
-- test: unique(integration, month)
-- test: not_null(integration, month, trials_started, trials_ended, trials_converted)
-- test: expression(trials_converted <= trials_ended) as converted_among_ended
-- test: expression(conversion_rate is null or conversion_rate between 0 and 1) as conversion_rate_is_a_share
--
-- From stripe.subscriptions (trial_start, trial_end) and marts.subscription_periods; one row per month in which a
-- trial started or ended.
-- A trial converted when marts.subscription_periods has a counting period starting at its trial_end: canceled
-- during the trial, unpaid from the first invoice, or incomplete subscriptions did not convert.
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col month: first day of the calendar month (UTC).
-- @col trials_started: subscriptions whose trial_start falls in the month.
-- @col trials_ended: subscriptions whose trial_end falls in the month and is not in the future.
-- @col trials_converted: of trials_ended, those that went on to count as paying after the trial.
-- @col conversion_rate: trials_converted / trials_ended, rounded to 4 decimals; null when no trial ended.
with trials as (
    select
        s.integration,
        s.id as subscription,
        date_trunc('month', s.trial_start)::date as start_month,
        case when s.trial_end <= $as_of then date_trunc('month', s.trial_end)::date end as end_month,
        p.counts_from is not null and p.counts_from >= s.trial_end as converted
    from stripe.subscriptions as s
    left join marts.subscription_periods as p
        on p.integration = s.integration and p.subscription = s.id
    where s.trial_start is not null and s.trial_end is not null
),

started as (
    select integration, start_month as month, count(*) as trials_started
    from trials
    group by integration, start_month
),

ended as (
    select
        integration,
        end_month as month,
        count(*) as trials_ended,
        count(*) filter (where converted) as trials_converted
    from trials
    where end_month is not null
    group by integration, end_month
)

select
    coalesce(s.integration, e.integration) as integration,
    coalesce(s.month, e.month) as month,
    coalesce(s.trials_started, 0)::integer as trials_started,
    coalesce(e.trials_ended, 0)::integer as trials_ended,
    coalesce(e.trials_converted, 0)::integer as trials_converted,
    round(e.trials_converted / nullif(e.trials_ended, 0), 4) as conversion_rate
from started as s
full outer join ended as e
    on e.integration = s.integration and e.month = s.month
order by integration, month
