"""Plangate: a GitOps bot for operational plans."""

__version__ = "0.1.0"
