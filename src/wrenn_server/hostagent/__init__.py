"""Host agent: owns the capsules on one host and serves the HostAgent gRPC contract."""
