-- The customers behind every monthly MRR movement per integration and currency: who was new, expanded, came back, contracted or churned, on which day, with which subscriptions, and their MRR before and after.
-- test: unique(integration, currency, customer, date)
-- test: not_null(integration, currency, month, date, movement, customer, mrr_before, mrr_after, amount)
-- test: expression(case movement when 'new' then mrr_before = 0 and mrr_after > 0 and amount = mrr_after when 'reactivation' then mrr_before = 0 and mrr_after > 0 and amount = mrr_after when 'expansion' then mrr_before > 0 and mrr_after > mrr_before and amount = mrr_after - mrr_before when 'contraction' then mrr_after > 0 and mrr_after < mrr_before and amount = mrr_before - mrr_after when 'churned' then mrr_before > 0 and mrr_after = 0 and amount = mrr_before else false end) as movement_matches_the_change
-- test: query(
--     select later.* from this as later
--     join this as earlier
--         on earlier.integration = later.integration and earlier.currency = later.currency
--         and earlier.customer = later.customer and earlier.date < later.date
--     where later.movement = 'new'
-- ) as new_only_on_the_first_day
-- test: query(
--     select b.currency, b.month, b.new_mrr, d.new_mrr as customers_new_mrr, b.expansion_mrr,
--         d.expansion_mrr as customers_expansion_mrr, b.reactivation_mrr, d.reactivation_mrr as customers_reactivation_mrr,
--         b.contraction_mrr, d.contraction_mrr as customers_contraction_mrr, b.churned_mrr,
--         d.churned_mrr as customers_churned_mrr, d.currency as customers_currency, d.month as customers_month
--     from marts.mrr_bridge_monthly as b
--     full join (
--         select integration, currency, month,
--             sum(amount) filter (where movement = 'new') as new_mrr,
--             sum(amount) filter (where movement = 'expansion') as expansion_mrr,
--             sum(amount) filter (where movement = 'reactivation') as reactivation_mrr,
--             sum(amount) filter (where movement = 'contraction') as contraction_mrr,
--             sum(amount) filter (where movement = 'churned') as churned_mrr
--         from this
--         group by integration, currency, month
--     ) as d
--         on d.integration = b.integration and d.currency = b.currency and d.month = b.month
--     where b.month is null
--         or coalesce(d.new_mrr, 0) <> b.new_mrr or coalesce(d.expansion_mrr, 0) <> b.expansion_mrr
--         or coalesce(d.reactivation_mrr, 0) <> b.reactivation_mrr
--         or coalesce(d.contraction_mrr, 0) <> b.contraction_mrr or coalesce(d.churned_mrr, 0) <> b.churned_mrr
-- ) as sums_to_the_bridge
--
-- One row per customer, currency and day its MRR (rounded to 0.01) changed: the rows of
-- metrics.mrr_customer_movements with the customer's name and email and its subscriptions. Summed per month and
-- movement, the amounts equal marts.mrr_bridge_monthly to the cent (sums_to_the_bridge compares the two sources).
-- @col integration: the configured Stripe account (`default` for the environment key).
-- @col currency: lowercase ISO code as Stripe writes it.
-- @col month: first day of the calendar month of date (UTC).
-- @col date: the UTC day whose end-of-day MRR differs from the day before.
-- @col movement: new | expansion | reactivation | contraction | churned (the movement definitions of metrics.mrr_daily).
-- @col customer: Stripe customer id.
-- @col customer_name: the customer's name in Stripe (null when it has none).
-- @col customer_email: the customer's email in Stripe (null when it has none).
-- @col subscriptions: comma-separated ids of the customer's subscriptions in this currency that counted on the day before or on date (all of its subscriptions in the currency when their own dates do not show which).
-- @col mrr_before: the customer's MRR in this currency at the end of the day before.
-- @col mrr_after: the customer's MRR in this currency at the end of date.
-- @col amount: the movement as a positive amount: mrr_after - mrr_before for increases, mrr_before - mrr_after for decreases.
with moves as (
    select
        integration,
        currency,
        customer,
        date,
        date_trunc('month', date)::date as month,
        movement,
        previous_mrr,
        mrr,
        amount
    from metrics.mrr_customer_movements
),

subscriptions as (
    -- marts.subscription_periods dates subscriptions from their own fields only, so when none of them shows as
    -- counting around the day (a change dated from invoices or events), all of the customer's are listed
    select
        m.integration,
        m.currency,
        m.customer,
        m.date,
        string_agg(p.subscription, ',' order by p.subscription) filter (
            where p.counts_from < m.date + interval 1 day and (p.counts_until is null or p.counts_until >= m.date)
        ) as counting,
        string_agg(p.subscription, ',' order by p.subscription) as every
    from moves as m
    join marts.subscription_periods as p
        on p.integration = m.integration and p.currency = m.currency and p.customer = m.customer
    group by m.integration, m.currency, m.customer, m.date
)

select
    m.integration,
    m.currency,
    m.month,
    m.date,
    m.movement,
    m.customer,
    c.name as customer_name,
    c.email as customer_email,
    coalesce(s.counting, s.every) as subscriptions,
    m.previous_mrr as mrr_before,
    m.mrr as mrr_after,
    m.amount
from moves as m
left join stripe.customers as c
    on c.integration = m.integration and c.id = m.customer
left join subscriptions as s
    on s.integration = m.integration and s.currency = m.currency and s.customer = m.customer and s.date = m.date
order by m.integration, m.currency, m.month, m.movement, m.amount desc, m.customer
