"""Adapters to the host agents, below the services: the pool of agent clients, agent error
translation, capsule placement and the single box's own host row. Imports no service."""
