"""Hosts as the control plane sees them: agent clients, placement and reconciliation."""
