"""Stage 1 of the request flow: turn what a client sent into image bytes, then into PIL images."""
