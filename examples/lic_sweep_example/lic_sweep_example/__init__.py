"""An example of a model kept in its own package and used in lic-sweep's sweeps (see README.md)."""
