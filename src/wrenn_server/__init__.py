"""Wrenn server: control plane, host agent and in-capsule agent."""
