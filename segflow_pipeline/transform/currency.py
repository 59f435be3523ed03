"""Currencies as Stripe writes them: which codes exist and how many minor-unit digits each has.

Belongs here: the currency tables and the expressions that read them. Not here: amounts, rounding (see
`money.py`) or anything about subscriptions.

Stripe sends amounts as integers in the currency's smallest unit. Most currencies have two decimals, but
zero-decimal currencies (jpy, krw, ...) have none and three-decimal ones (bhd, kwd, ...) have three, so minor
units are converted with this table and never by dividing by 100.
https://docs.stripe.com/currencies#zero-decimal and https://docs.stripe.com/currencies#three-decimal
"""

from __future__ import annotations

import polars as pl

ZERO_DECIMAL: frozenset[str] = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL: frozenset[str] = frozenset("bhd jod kwd omr tnd".split())

# ISO 4217 codes (current and recently replaced ones Stripe may still report), lowercase as Stripe writes them.
# A subscription in a code outside this list cannot be placed in a currency row and is reported as unusable.
ISO_4217: frozenset[str] = frozenset(
    """
    aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob bov brl bsd btn bwp byn bzd
    cad cdf che chf chw clf clp cny cop cou crc cuc cup cve czk djf dkk dop dzd egp ern etb eur fjd fkp gbp
    gel ghs gip gmd gnf gtq gyd hkd hnl hrk htg huf idr ils inr iqd irr isk jmd jod jpy kes kgs khr kmf kpw
    krw kwd kyd kzt lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mru mur mvr mwk mxn mxv myr mzn nad
    ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sdg sek sgd shp sle
    sll sos srd ssp stn svc syp szl thb tjs tmt tnd top try ttd twd tzs uah ugx usd usn uyi uyu uyw uzs ved
    ves vnd vuv wst xaf xcd xcg xof xpf yer zar zmw zwg zwl
    """.split()
)


def exponent(currency: str) -> int:
    """Number of minor-unit digits of one currency code (2 unless Stripe lists it as zero- or three-decimal)."""
    code = currency.lower()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def exponent_expr(currency: pl.Expr) -> pl.Expr:
    """Minor-unit digits of a lowercase currency column: 0, 2 or 3 (Int64)."""
    return (
        pl.when(currency.is_in(list(ZERO_DECIMAL))).then(pl.lit(0, pl.Int64))
        .when(currency.is_in(list(THREE_DECIMAL))).then(pl.lit(3, pl.Int64))
        .otherwise(pl.lit(2, pl.Int64))
    )


def is_known_expr(currency: pl.Expr) -> pl.Expr:
    """True where the column holds a currency code Stripe can bill in (lowercase ISO 4217)."""
    return currency.is_in(list(ISO_4217)).fill_null(False)
