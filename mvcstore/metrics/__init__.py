"""Metrics indexes: the protocol and the embedded implementation."""
