"""Perceive Anything Model (PAM) as a library."""
__version__ = "0.1.0"
