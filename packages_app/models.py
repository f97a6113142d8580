"""Packages and pipelines models: packages, runs, pipeline runs."""
