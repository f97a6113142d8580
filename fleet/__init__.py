"""The SLAMon-compatible agent fleet manager."""
