"""Objective speech metrics (see each module)."""
