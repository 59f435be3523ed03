"""`StripeResource`: the Dagster face of `stripe_api.client.StripeReader`. Thin: configuration and key safety only.

The resource holds the *names* of the environment variables, never a key: Dagster stores resource config with
runs, and a key must never reach disk. Keys are read (`config.secret`) when a reader is built. `segflow check`
uses this resource too, outside any run.
"""

from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from segflow_pipeline import config
from segflow_pipeline.config import DEFAULT_INTEGRATION, Integration
from segflow_pipeline.stripe_api.client import StripeReader
from segflow_pipeline.stripe_api.keys import KeyInfo, classify


class StripeResource(dg.ConfigurableResource):
    """Read-only access to the configured Stripe accounts (the `default` one reads STRIPE_API_KEY)."""

    key_env: str = config.API_KEY_ENV
    # STRIPE_API_BASE (bound as `dg.EnvVar` in defs/resources.py); an account's own `api_base` wins. None: the
    # variable as `config` reads it (run config that sets other fields of this resource drops the binding), else
    # Stripe itself.
    api_base: Optional[str] = None
    max_requests_per_second: float = 0.0  # 0: Stripe's documented limit for the key's mode (25 test, 90 live)

    _readers: dict = PrivateAttr(default_factory=dict)

    def _variable(self, integration: Integration) -> str:
        return self.key_env if integration.name == DEFAULT_INTEGRATION else integration.key_env

    def key_info(self, integration: Integration) -> KeyInfo:
        variable = self._variable(integration)
        return classify(config.secret(variable), variable=variable)

    def api_base_of(self, integration: Integration) -> str | None:
        return integration.api_base or self.api_base or config.api_base()

    def reader(self, integration: Integration) -> StripeReader:
        """One reader (one rate limiter) per account for the life of this resource."""
        if integration.name not in self._readers:
            variable = self._variable(integration)
            self._readers[integration.name] = StripeReader(
                config.secret(variable),
                api_base=self.api_base_of(integration),
                key_variable=variable,
                max_requests_per_second=self.max_requests_per_second or None,
            )
        return self._readers[integration.name]
