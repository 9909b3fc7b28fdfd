"""The silent-loss proof: Plane pods (baseline and mutated by plane-guard) in podman against a real RabbitMQ.

``python -m tests.proof`` prints the table; ``tests/runtime/test_proof.py`` asserts the same runs.
"""
