"""Request parsing and response shaping of each public API (one module per API contract)."""
