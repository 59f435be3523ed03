import pytest

from segflow_pipeline.stripe_api import keys

FULL = "sk_test_51Hx8Yz2eZvKYlo2C9Xabcd"


@pytest.mark.parametrize(
    "key, kind, mode",
    [(FULL, "secret", "test"), ("sk_live_51Hx8Yz2eZvKYlo2Cwxyz", "secret", "live"),
     ("rk_test_51Hx8Yz2eZvKYlo2C1234", "restricted", "test"), ("rk_live_51Hx8Yz2eZvKYlo2C5678", "restricted", "live")],
    ids=["secret-test", "secret-live", "restricted-test", "restricted-live"],
)
def test_accepted_keys_know_their_kind_and_mode(key, kind, mode):
    info = keys.classify(key)
    assert (info.kind, info.mode) == (kind, mode)
    assert info.masked == key[:8] + "…" + key[-4:]


@pytest.mark.parametrize(
    "key, fragment",
    [("", "set STRIPE_API_KEY"), ("   ", "set STRIPE_API_KEY"), (None, "set STRIPE_API_KEY"),
     ("pk_test_51Hx8Yz2eZvKYlo2Cabcd", "publishable keys cannot read subscriptions; use a secret or restricted key"),
     ("sk_prod_51Hx8Yz2eZvKYlo2Cabcd", "is not a Stripe API key"), ("hello", "is not a Stripe API key")],
    ids=["empty", "blank", "none", "publishable", "unknown-mode", "garbage"],
)
def test_refused_keys_say_what_to_do(key, fragment):
    with pytest.raises(keys.StripeSetupError) as err:
        keys.classify(key)
    assert fragment in str(err.value)
    if key and len(key) > 8:
        assert key not in str(err.value)


def test_redact_masks_every_key_in_text():
    text = f"failed with {FULL} and rk_live_abcdefgh12345678 again {FULL}"
    out = keys.redact(text)
    assert FULL not in out and "rk_live_abcdefgh12345678" not in out
    assert out.count("sk_test_…abcd") == 2 and "rk_live_…5678" in out


def test_permission_message_names_missing_permission_and_all_needed():
    info = keys.classify("rk_test_51Hx8Yz2eZvKYlo2C1234")
    message = keys.missing_permission_message(info, "subscriptions", "Having the 'rak_subscription_read' permission")
    assert "rak_subscription_read" in message and "subscriptions" in message
    for resource in keys.REQUIRED_READ_PERMISSIONS:
        assert resource in message


def test_empty_account_warning_suggests_the_other_mode():
    assert "live-mode key" in keys.empty_account_warning(keys.classify(FULL))
