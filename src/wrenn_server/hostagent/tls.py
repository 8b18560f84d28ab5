"""The agent's TLS identity: a self-signed certificate made at the agent's first registration and
pinned by the control plane, which learns it from the registration request (authenticated by the
one-time token). No certificate authority to run, and nothing else can stand in for the host:
the control plane trusts that one certificate for that one host, whatever its address."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..agentproto.tls import SERVER_NAME

_VALID_FOR = dt.timedelta(days=3650)


@dataclass(frozen=True)
class Identity:
    key_pem: bytes
    cert_pem: bytes


def _paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "tls" / "agent.key", data_dir / "tls" / "agent.crt"


def load(data_dir: Path) -> Identity | None:
    key_path, cert_path = _paths(data_dir)
    if not (key_path.exists() and cert_path.exists()):
        return None
    return Identity(key_path.read_bytes(), cert_path.read_bytes())


def generate() -> Identity:
    """A new P-256 key and its self-signed certificate for SERVER_NAME."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        # Its own trust anchor: the control plane pins it as the only root for this host.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Identity(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def create(data_dir: Path) -> Identity:
    """A new identity, both files 0600 in a 0700 folder."""
    identity = generate()
    key_path, cert_path = _paths(data_dir)
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, data in ((key_path, identity.key_pem), (cert_path, identity.cert_pem)):
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(path)
    return identity


def load_or_create(data_dir: Path) -> Identity:
    return load(data_dir) or create(data_dir)
