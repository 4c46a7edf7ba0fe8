"""DINOv2-family embeddings: geometry, preprocessing, forward, pooling, and the runner."""
