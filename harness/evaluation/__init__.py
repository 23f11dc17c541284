"""Estimates computed after training from saved params (importance-weighted NLL)."""
