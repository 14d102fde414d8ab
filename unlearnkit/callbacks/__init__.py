"""Callbacks: evaluation at every validation epoch, run files (metrics.json, lock), cost ledger."""
