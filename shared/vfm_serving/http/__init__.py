"""The HTTP edge: raw request bodies in, typed errors to status and body out."""
