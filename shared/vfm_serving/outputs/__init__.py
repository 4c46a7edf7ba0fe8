"""Stage 4 of the request flow: encode model outputs for the response body."""
