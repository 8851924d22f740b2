"""Conduit's first-party plugins: each written only against conduit.sdk, like a third-party plugin."""
