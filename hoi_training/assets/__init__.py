"""Generators of the assets the runtime ships (they run at development time, not on a robot)."""
