"""The testbed's certificates: one CA, the apiserver's serving certificate, an admin client
certificate and the service-account signing key.

Generated once per testbed directory and reused, so a kubeconfig handed out stays valid across
``down`` and ``up``.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gitquorum_testbed import settings

VALIDITY = datetime.timedelta(days=3650)
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclasses.dataclass(frozen=True)
class Files:
    """Paths of every PKI file."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    """Signs service-account tokens (kube-apiserver) and verifies them."""
    sa_pub: Path

    @classmethod
    def under(cls, directory: Path) -> Files:
        names = {
            f.name: directory / f.name.replace("_cert", ".crt").replace("_key", ".key")
            for f in dataclasses.fields(cls)
        }
        names["sa_pub"] = directory / "sa.pub"
        return cls(**names)


def ensure(directory: Path) -> Files:
    """Create whatever is missing; never replace what exists."""
    files = Files.under(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not files.ca_cert.exists():
        _write_ca(files)
    ca_key = _load_key(files.ca_key)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if not files.apiserver_cert.exists():
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in APISERVER_DNS_NAMES]
        for ip in ("127.0.0.1", str(settings.BRIDGE_ADDRESS), str(settings.KUBERNETES_SERVICE_IP)):
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        _write_leaf(
            files.apiserver_cert,
            files.apiserver_key,
            ca=(ca_cert, ca_key),
            subject=_name("kube-apiserver"),
            sans=sans,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
        )
    if not files.admin_cert.exists():
        _write_leaf(
            files.admin_cert,
            files.admin_key,
            ca=(ca_cert, ca_key),
            subject=_name("testbed-admin", organization="system:masters"),
            sans=[],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
    if not files.sa_key.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(files.sa_key, key)
        files.sa_pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return files


def _name(common_name: str, *, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _write_ca(files: Files) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("gitquorum-testbed-ca")
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, key)
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_leaf(
    cert_path: Path,
    key_path: Path,
    *,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> None:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(data)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: expected an EC key")
    return key
