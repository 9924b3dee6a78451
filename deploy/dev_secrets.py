"""Key material for trying the service in containers (compose.yaml's one-shot `secrets`
service): NOT for production, where the site's CA and authorisation server provide it.

    python dev_secrets.py ROOT

writes, unless ROOT/tls/tls.crt exists already (a second run changes nothing):

    ROOT/tls/ca.crt, tls.crt, tls.key    a local CA and the MLLP listener's certificate and key
                                         (the names of a kubernetes.io/tls Secret)
    ROOT/auth/jwks.json                  the public half of an ES256 token-signing key
    ROOT/clients/ca.key                  the CA's key (to make more certificates)
    ROOT/clients/ADT_A.crt, ADT_A.key    a sender's client certificate (CN=ADT_A, as
                                         deploy/container.toml's [[mllp.clients]] expects)
    ROOT/clients/signing-key.json        the private token-signing key (JWK), to mint tokens

Only the image's own packages are used (cryptography, joserfc).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import ECKey

SERVER_NAMES = ["identity", "localhost"]
SENDERS = ["ADT_A"]
DAYS = 365


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o600 if private else 0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make(root: Path) -> bool:
    """Write the files under ``root``; False (and nothing written) when they exist."""
    if (root / "tls" / "tls.crt").exists():
        return False
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("identity development CA")
    ca = _certificate("identity development CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("identity", server_key, ca_name, ca_key, server=True)
    _write(root / "clients" / "ca.key", _pem_key(ca_key), private=True)
    for sender in SENDERS:
        key = ec.generate_private_key(ec.SECP256R1())
        _write(root / "clients" / f"{sender}.key", _pem_key(key), private=True)
        _write(root / "clients" / f"{sender}.crt", _pem(_certificate(sender, key, ca_name, ca_key)))
    signing = ECKey.generate_key("P-256", parameters={"kid": "dev-1"}, private=True)
    _write(root / "clients" / "signing-key.json",
           json.dumps(signing.as_dict(private=True)).encode(), private=True)
    _write(root / "auth" / "jwks.json",
           json.dumps({"keys": [signing.as_dict(private=False)]}).encode())
    _write(root / "tls" / "ca.crt", _pem(ca))
    _write(root / "tls" / "tls.key", _pem_key(server_key), private=True)
    _write(root / "tls" / "tls.crt", _pem(server))  # last: its presence means "done"
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    print(f"dev_secrets: {'written under' if make(root) else 'already present in'} {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
