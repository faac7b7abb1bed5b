"""OPC UA security of the PLC server: Basic256Sha256 with Sign and SignAndEncrypt when the station has a
certificate (``opcua_cert`` / ``opcua_key``, ``--opcua-cert`` / ``--opcua-key``), the unsecured endpoint
only when ``opcua_allow_unsecured`` says so. deploy/plc/README.md tells how to make the pair.

asyncua 1.1 offers only the endpoints it is given, but its server still lets a client that skips the
endpoint check create and activate a session over an unsecured channel (the channel itself must stay open
for GetEndpoints, as the standard wants). So the refusal is enforced where the session is activated: the
user manager gets the secure channel's peer certificate, which an unsecured channel does not have, and
only anonymous identity tokens are offered (an X509 identity token must not stand in for a secure channel).

The client trust list (``opcua_trusted_clients``, a directory of client certificates) is enforced there too,
on that same peer certificate, and not with asyncua's ``CertificateValidator``/``TrustStore``: asyncua 1.1
calls its validator at CreateSession with the certificate the client *claims* in that request (and skips it
when the claim is empty), never with the certificate the secure channel was opened and signed with. A client
could open its channel with any self-signed certificate and name a trusted PLC's (public) certificate in
CreateSession (tested). The channel's certificate is the one the client proved it holds the key of, so it is
the one compared here: exact DER (its SHA-256 fingerprint) and valid now. That is how a self-signed PLC
certificate, the norm on the line, is trusted; CA chains and revocation lists are not supported.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)
CERTIFICATE_FIELDS = "opcua_cert/opcua_key"


@dataclass(frozen=True)
class OpcUaSecurity:
    certificate: Optional[Path] = None  # PEM or DER X.509 certificate of the station
    private_key: Optional[Path] = None  # its private key, PEM or DER, unencrypted
    allow_unsecured: bool = False  # with a certificate: also offer SecurityPolicy None
    trusted_clients: Optional[Path] = None  # directory of the client certificates let in; None: any (commissioning)

    def __post_init__(self) -> None:
        if self.trusted_clients is not None and self.certificate is None:
            raise ValueError("opcua_trusted_clients: only with opcua_cert/opcua_key (client certificates are only "
                             "exchanged on a secure channel)")

    @property
    def secured(self) -> bool:
        return self.certificate is not None


@dataclass(frozen=True)
class TrustedClients:
    """The client trust list as read at start-up: the SHA-256 fingerprint of each certificate's DER -> its file."""
    directory: Path
    files: dict[str, Path]


class SecureChannelUsers:
    """asyncua user manager: a session is activated only on a signed (or signed and encrypted) channel,
    unless unsecured access is allowed, and with a trust list only for a client whose channel certificate is
    in it and valid now. Every PLC gets the same (user) role: the address space has no roles."""

    def __init__(self, allow_unsecured: bool, trusted: Optional[TrustedClients] = None,
                 peer: Callable[[], str] = lambda: "unknown address"):
        self.allow_unsecured = allow_unsecured
        self.trusted = trusted
        self.peer = peer  # the address of the connection being served, for the log

    def get_user(self, iserver, username=None, password=None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole

        if not certificate and not self.allow_unsecured:  # an unsecured channel's peer certificate is b""
            return None  # asyncua answers BadUserAccessDenied
        if certificate and self.trusted is not None:
            self._check_trusted(certificate)
        return User(role=UserRole.User)

    def _check_trusted(self, certificate: bytes) -> None:
        """Refuse the session unless the channel's certificate (DER, as asyncua re-encodes it) is in the trust
        list and valid now. The refusal is asyncua's ServiceError, which it answers with a ServiceFault
        carrying that status, so that the PLC's diagnostics say why (BadCertificateUntrusted or
        BadCertificateTimeInvalid) rather than BadUserAccessDenied; the session stays unactivated either way.
        Logged once per attempt (one ActivateSession each) with what finds the file to add, nothing secret."""
        from asyncua import ua
        from asyncua.common.utils import ServiceError
        from cryptography import x509

        fingerprint = sha256_fingerprint(certificate)
        peer = x509.load_der_x509_certificate(certificate)
        subject = peer.subject.rfc4514_string()
        trusted_file = self.trusted.files.get(fingerprint)
        if trusted_file is None:
            log.warning("OPC UA client at %s refused: its certificate is not in opcua_trusted_clients (%s): "
                        "subject %r, SHA-256 fingerprint %s", self.peer(), self.trusted.directory, subject,
                        fingerprint)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        if not valid_now(peer):
            log.warning("OPC UA client at %s refused: its certificate (%s in opcua_trusted_clients) is valid from "
                        "%s to %s only: subject %r, SHA-256 fingerprint %s", self.peer(), trusted_file,
                        peer.not_valid_before_utc, peer.not_valid_after_utc, subject, fingerprint)
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)


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


def read_trusted_clients(security: OpcUaSecurity) -> Optional[TrustedClients]:
    """The client trust list (None without ``opcua_trusted_clients``: any client certificate is let in), read
    once at start-up: a PLC's certificate added later takes a restart, so what is trusted is what was logged
    at start. Every file of the directory (not its subdirectories, nor hidden files such as .gitkeep) must be
    one X.509 certificate, PEM or DER; anything else is refused naming the file, never quoting its content (a
    private key copied there by mistake). An empty directory trusts nobody."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if security.trusted_clients is None:
        return None
    directory = Path(security.trusted_clients)
    try:
        paths = sorted(path for path in directory.iterdir() if path.is_file() and not path.name.startswith("."))
    except OSError as error:
        raise ValueError(f"opcua_trusted_clients: cannot read {directory} ({error.strerror or error})") from None
    files: dict[str, Path] = {}
    for path in paths:
        content, encoding = _read(path, "opcua_trusted_clients")
        try:
            certificates = (x509.load_pem_x509_certificates(content) if encoding == "pem"
                            else [x509.load_der_x509_certificate(content)])
        except Exception:  # the library's text is not shown: the file could be a key
            hint = " (it holds a private key: only the client's certificate belongs here)" \
                if b"PRIVATE KEY" in content else ""
            raise ValueError(f"opcua_trusted_clients: {path} is not an X.509 certificate (PEM or DER){hint}") \
                from None
        if len(certificates) != 1:
            raise ValueError(f"opcua_trusted_clients: {path} holds {len(certificates)} certificates: one client "
                             "certificate per file")
        certificate = certificates[0]
        files[sha256_fingerprint(certificate.public_bytes(Encoding.DER))] = path
        if not valid_now(certificate):
            log.warning("opcua_trusted_clients: %s is valid from %s to %s only: its client is refused (subject %r)",
                        path, certificate.not_valid_before_utc, certificate.not_valid_after_utc,
                        certificate.subject.rfc4514_string())
    if not files:
        log.warning("opcua_trusted_clients: no certificate in %s: every OPC UA client is refused until a PLC's "
                    "certificate is put there and the service restarted", directory)
    return TrustedClients(directory, files)


def sha256_fingerprint(der: bytes) -> str:
    """As ``openssl x509 -noout -fingerprint -sha256`` prints it (AB:01:...), so a logged one can be looked up."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def valid_now(certificate) -> bool:
    """Within the certificate's validity dates now (checked on every connection: a certificate expires while
    the service runs)."""
    now = datetime.now(timezone.utc)
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


async def apply_security(server, security: OpcUaSecurity, station_pair, trusted: Optional[TrustedClients] = None,
                         peer: Callable[[], str] = lambda: "unknown address") -> None:
    """Load the station's certificate and key (``read_station_pair``'s result; None when not secured) into
    ``server`` and choose its endpoints and identity tokens; ``trusted`` (``read_trusted_clients``'s result)
    is the client trust list, ``peer`` names the connection being served in the refusals' log."""
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
    server.iserver.user_manager = SecureChannelUsers(security.allow_unsecured, trusted, peer)


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
