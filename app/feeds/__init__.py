"""Market-data sources inside the gateway: a simulated feed and CSV replay. Each writes
ticks to the raw stream as an outside feed's ``POST /v1/marketdata/ticks`` would."""
