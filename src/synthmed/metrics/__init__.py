"""Metrics and report figures."""
