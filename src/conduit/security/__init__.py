"""Capabilities: the grammar, the user's grants, and enforcement helpers for each host."""
