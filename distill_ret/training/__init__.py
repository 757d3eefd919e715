"""Training core: partitioning, train state, jitted loop, checkpoints."""
