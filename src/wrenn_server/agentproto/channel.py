"""gRPC channel options both ends of the agent connection use."""

from __future__ import annotations

# Room for the largest message either side sends (file chunks, listings, exec output).
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 80 * 1024 * 1024),
    ("grpc.max_send_message_length", 80 * 1024 * 1024),
]

# The caller's side. A channel that failed to connect fails every call at once until its next
# attempt, and gRPC's default wait between attempts grows to two minutes: an agent restarted
# after a few failed calls would look down long after it is back. Retry at most a second apart
# (a connection attempt to a host is cheap).
CLIENT_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
