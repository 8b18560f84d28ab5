"""envd: the in-capsule agent (pid 1) that runs processes and file operations over HTTP.

Standard library only; runs on the capsule's own python3 (3.9 or newer).
"""

__version__ = "0.1.0"
