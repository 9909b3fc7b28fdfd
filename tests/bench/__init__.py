"""``python -m tests.bench``: /mutate throughput and latency next to a raw ASGI floor (not a test)."""
