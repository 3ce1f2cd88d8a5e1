"""Dock widgets: one module per pipeline stage, thin wrappers over the core."""
