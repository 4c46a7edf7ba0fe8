"""SAFE detector dev tools (not shipped in the Truss): synthetic data, training, dataset runner."""
