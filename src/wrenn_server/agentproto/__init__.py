"""What the control plane and the host agent share about talking to each other: the agent
client, the gRPC channel options, the TLS name and certificate checks, and a host's specs. It
imports neither side (the import contracts in pyproject.toml keep it so); the generated stubs
are in wrenn_server.proto."""
