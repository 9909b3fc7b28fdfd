"""The HTTPS server: the ASGI app and its hot path, connection bounds, TLS and certificate
reload, drain on SIGTERM, metrics and the decision log. It calls the core for every decision and
adds only what serving needs; it never imports the operator commands (``ops``).
"""
