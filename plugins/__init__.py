"""Pluggable parts: acquisition strategies, models and augmentations, each in a registry."""
