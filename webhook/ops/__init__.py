"""The operator commands: preview, status, certificates, publishes. They read files or the
cluster, call the core for the decisions, and print; they never import the server (``serve``).
"""
