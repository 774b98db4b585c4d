"""The Hydra config tree of lic-sweep, and the resolvers its YAML uses."""
