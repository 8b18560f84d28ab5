"""gRPC channel options both ends of the agent connection use."""

from __future__ import annotations

# Room for the largest message either side sends (file chunks, listings, exec output).
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 80 * 1024 * 1024),
    ("grpc.max_send_message_length", 80 * 1024 * 1024),
]
