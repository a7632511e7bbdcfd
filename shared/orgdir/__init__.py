"""Shared plumbing of the Orgdir services."""
