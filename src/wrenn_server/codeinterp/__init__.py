"""The code interpreter server of the `code-interpreter-v1` template (server.py): runs inside its
capsules, not on the host; copied into the template when it is built."""
