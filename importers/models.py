"""Models of the Importers app (Pollers of REST APIs (Apteligent, Pingdom) that push metrics to Graphite)."""
