"""Models of the Packages and pipelines app (Analytics packages (ApMan) and git pipelines (FX Quants runner))."""
