"""Prefect flows: thin wrappers over ``pipeline`` (everything also runs without Prefect)."""
