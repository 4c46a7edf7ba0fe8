"""Recipes for running `vfm` at scale under existing distributed engines."""
