"""Importers models: Graphite sinks, import sources and runs."""
