"""Generators of small stand-in checkpoints built with the real architecture classes.

Stand-ins have random weights: their numbers mean nothing. They exist so the real loading and
serving code can run here, where the real weights cannot be downloaded.
"""
