"""Analytics packages (ApMan) and git pipelines (FX Quants runner)."""
