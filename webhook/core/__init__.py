"""The decision, pure: policy, matching and mutation, validation, the AMQP URL merge, and the
admission answer built from them.

Nothing here does I/O, logs, counts metrics or knows FastAPI, uvicorn, prometheus_client or the
kubernetes client (import-linter checks it), so every rule can be tested as a plain function and
runs the same in the server, in ``plane-guard preview`` and in ``plane-guard status``.
"""
