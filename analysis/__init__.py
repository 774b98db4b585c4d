"""From logged runs to RD curves, results tables, BD-rate and complexity tables."""
