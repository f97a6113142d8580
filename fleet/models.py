"""Models of the Agent fleet app (The SLAMon-compatible agent fleet manager)."""
