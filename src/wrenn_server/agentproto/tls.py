"""The agent's TLS identity as both sides see it: the name every agent certificate carries, and
the checks the control plane makes on the certificate it pins (the agent makes its identity in
hostagent/tls.py)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

# The name in every agent certificate; clients check it instead of the address (which the
# certificate need not know: hosts move, NAT rewrites them).
SERVER_NAME = "wrenn-host-agent"


def is_certificate(pem: str) -> bool:
    """True for one PEM certificate that parses (what the control plane accepts to pin)."""
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return False
    return pem.count("-----BEGIN CERTIFICATE-----") == 1


def fingerprint(pem: str | bytes) -> str:
    """SHA-256 of the certificate (DER), as colon-separated hex: what an operator compares
    between the agent's log and the control plane's host record."""
    data = pem.encode() if isinstance(pem, str) else pem
    digest = x509.load_pem_x509_certificate(data).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)
