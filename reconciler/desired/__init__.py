"""What the spec repository says the fleet should be: the fleet spec, its validation, the lock
resolved against the npm registry, and where specs are read from."""
