"""Developer tooling run by the Makefile: test prerequisites, offline image builds."""
