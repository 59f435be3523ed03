"""The sandbox accounts the end-to-end tests serve from one emulator (`integration/conftest.py`), by key."""

ACME_KEY = "sk_test_acme_4eC39HqLyjWDarjtT1zdp7dc"  # 250 subscriptions, seed 11
GLOBEX_KEY = "rk_test_globex_51Hx8Yz2eZvKYlo2C9Xw"  # 120 subscriptions, seed 12, built at acme's instant
NOSUBS_KEY = "rk_test_nosubs_51Hx8Yz2eZvKYlo2Cab"  # acme's account, served to a key without subscription access
