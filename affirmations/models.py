"""Affirmations models: checks, affirmations, evaluations."""
