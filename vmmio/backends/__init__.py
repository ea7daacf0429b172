"""Execution backends behind one small interface."""
