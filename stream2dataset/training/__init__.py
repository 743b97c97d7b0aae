"""Training: Ray Train runs over pinned snapshots, and sampling (DESIGN.md `training/`)."""
