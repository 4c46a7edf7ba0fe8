"""Stage 3 of the request flow: DINOv2-family embeddings (geometry, preprocessing, forward, pooling)."""
