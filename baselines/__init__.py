"""Baseline methods, one module each. Every module here is imported by gapbench's discovery."""
