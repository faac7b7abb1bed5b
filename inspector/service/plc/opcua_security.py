"""OPC UA security of the PLC server: Basic256Sha256 with Sign and SignAndEncrypt when the station has a
certificate (``opcua_cert`` / ``opcua_key``, ``--opcua-cert`` / ``--opcua-key``), the unsecured endpoint
only when ``opcua_allow_unsecured`` says so. deploy/plc/README.md tells how to make the pair.

asyncua 1.1 offers only the endpoints it is given, but its server still lets a client that skips the
endpoint check create and activate a session over an unsecured channel (the channel itself must stay open
for GetEndpoints, as the standard wants). So the refusal is enforced where the session is activated: the
user manager gets the secure channel's peer certificate, which an unsecured channel does not have, and
only anonymous identity tokens are offered (an X509 identity token must not stand in for a secure channel).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CERTIFICATE_FIELDS = "opcua_cert/opcua_key"


@dataclass(frozen=True)
class OpcUaSecurity:
    certificate: Optional[Path] = None  # PEM or DER X.509 certificate of the station
    private_key: Optional[Path] = None  # its private key, PEM or DER, unencrypted
    allow_unsecured: bool = False  # with a certificate: also offer SecurityPolicy None

    @property
    def secured(self) -> bool:
        return self.certificate is not None


class SecureChannelUsers:
    """asyncua user manager: a session is activated only on a signed (or signed and encrypted) channel,
    unless unsecured access is allowed. Every PLC gets the same (user) role: the address space has no roles."""

    def __init__(self, allow_unsecured: bool):
        self.allow_unsecured = allow_unsecured

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole

        if not certificate and not self.allow_unsecured:  # an unsecured channel's peer certificate is b""
            return None  # asyncua answers BadUserAccessDenied
        return User(role=UserRole.User)


def read_station_pair(security: OpcUaSecurity) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    """The station's certificate and key as (content, "pem" | "der"), each parsed once here so that a file
    that cannot be used is refused before the server spends its start-up (about 2 s) on it. Raises
    ValueError naming the setting and the file, never the key's content."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = _read(security.certificate, "opcua_cert")
    key = _read(security.private_key, "opcua_key")
    try:
        (x509.load_pem_x509_certificate if certificate[1] == "pem" else x509.load_der_x509_certificate)(
            certificate[0])
    except Exception as error:
        raise ValueError(f"opcua_cert: {security.certificate} is not an X.509 certificate (PEM or DER): "
                         f"{error}") from None
    try:
        (serialization.load_pem_private_key if key[1] == "pem" else serialization.load_der_private_key)(
            key[0], password=None)
    except Exception as error:
        raise ValueError(f"opcua_key: {security.private_key} is not an unencrypted private key (PEM or DER): "
                         f"{type(error).__name__}") from None  # the text could quote key material: not shown
    return certificate, key


async def apply_security(server, security: OpcUaSecurity, station_pair) -> None:
    """Load the station's certificate and key (``read_station_pair``'s result; None when not secured) into
    ``server`` and choose its endpoints and identity tokens."""
    from asyncua import ua

    if not security.secured:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        return
    (certificate, certificate_format), (key, key_format) = station_pair
    await server.load_certificate(certificate, format=certificate_format)
    await server.load_private_key(key, format=key_format)
    uri = application_uri(server.iserver.certificate)
    if uri is not None:  # clients compare the server's application URI with its certificate's
        await server.set_application_uri(uri)
    policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign]
    if security.allow_unsecured:
        policies.append(ua.SecurityPolicyType.NoSecurity)
    server.set_security_policy(policies)
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    server.iserver.user_manager = SecureChannelUsers(security.allow_unsecured)


def application_uri(certificate) -> Optional[str]:
    """The URI in the certificate's subject alternative names (an OPC UA application certificate has one)."""
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, AttributeError):
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _read(path: Path, setting: str) -> tuple[bytes, str]:
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{setting}: cannot read {path} ({error.strerror or error})") from None
    return content, "pem" if content.lstrip().startswith(b"-----BEGIN") else "der"
