"""Placeholder: replaced by the devtools plugin."""
