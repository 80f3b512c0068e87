"""Tasks: LightningModules and training entry points."""
