"""Developer tooling (not shipped to Baseten): stand-in checkpoints, local Truss server, demo."""
