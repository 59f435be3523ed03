"""Asset keys that more than one module names, written once. Key = where the table lives in DuckDB (STYLE.md).

Keys only one module uses stay beside their asset; the `stripe/<table>` keys are `extract.assets.RAW_KEYS`.
"""

import dagster as dg

MRR_DAILY = dg.AssetKey(["metrics", "mrr_daily"])
CUSTOMER_MOVEMENTS = dg.AssetKey(["metrics", "mrr_customer_movements"])
# Written by the reporting-currency asset when SEGFLOW_REPORTING_CURRENCY is set.
MRR_DAILY_REPORTING = dg.AssetKey(["metrics", "mrr_daily_reporting"])
MRR_BRIDGE_MONTHLY = dg.AssetKey(["marts", "mrr_bridge_monthly"])
BET_IMPACT = dg.AssetKey(["marts", "bet_impact"])
