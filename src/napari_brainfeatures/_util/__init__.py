"""Plumbing shared by every stage: files, overwrites, devices, lazy exports, old names."""
