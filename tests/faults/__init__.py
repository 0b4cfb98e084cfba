"""Reliability and security suite: real faults on real parts, bad input, and nothing lost."""
