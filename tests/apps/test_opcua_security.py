"""OPC UA security of the PLC server (inspector/service/plc/opcua_security.py): a self-signed station certificate
made in tmp, a real asyncua client over Basic256Sha256 SignAndEncrypt driving the handshake, and unsecured
clients refused -- also one that skips the client-side endpoint check, which the server itself must refuse.
With a client trust list (opcua_trusted_clients) only the PLC whose certificate is there gets a session: another
self-signed client, one that names the trusted certificate in CreateSession but signs its channel with its own,
and an expired certificate in the list are refused, each logged with its fingerprint."""
from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("asyncua.sync")

import asyncua  # noqa: E402
import asyncua.sync  # noqa: E402
from asyncua import ua  # noqa: E402
from asyncua.crypto.cert_gen import (dump_private_key_as_pem, generate_private_key,  # noqa: E402
                                     generate_self_signed_app_certificate)
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from inspector.service.plc import Handshake  # noqa: E402
from inspector.service.plc.opcua import OpcUaFrontEnd  # noqa: E402
from inspector.service.plc.opcua_security import OpcUaSecurity, read_trusted_clients  # noqa: E402
from line_helpers import NAMESPACE, free_port, wait_for  # noqa: E402


def self_signed(directory: Path, name: str, uri: str, usage, encoding=Encoding.PEM,
                key_name: str = "{}.key") -> tuple[Path, Path]:
    key = generate_private_key()
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
    certificate = generate_self_signed_app_certificate(key, uri, {"commonName": name}, names, extended=[usage],
                                                       days=30)
    suffix = "pem" if encoding == Encoding.PEM else "der"
    certificate_file, key_file = directory / f"{name}-cert.{suffix}", directory / key_name.format(name)
    certificate_file.write_bytes(certificate.public_bytes(encoding))
    key_file.write_bytes(dump_private_key_as_pem(key))
    return certificate_file, key_file


def expired(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A client pair as a PLC's would be once its certificate ran out: valid from 60 days ago to yesterday."""
    key = generate_private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                          data_encipherment=True, key_agreement=False, key_cert_sign=True, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=60)).not_valid_after(now - timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
                   .add_extension(usage, critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .sign(key, hashes.SHA256()))
    certificate_file, key_file = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    certificate_file.write_bytes(certificate.public_bytes(Encoding.PEM))
    key_file.write_bytes(dump_private_key_as_pem(key))
    return certificate_file, key_file


def fingerprint(certificate_file: Path) -> str:
    return x509.load_pem_x509_certificate(certificate_file.read_bytes()).fingerprint(hashes.SHA256()).hex(":").upper()


@pytest.fixture()
def pki(tmp_path):
    # The station's pair as operators often have it: a DER certificate, a PEM key named .key (told apart by content).
    station = self_signed(tmp_path, "station", "urn:pcb-inspector:line1", ExtendedKeyUsageOID.SERVER_AUTH,
                          encoding=Encoding.DER)
    plc = self_signed(tmp_path, "plc", "urn:example:plc", ExtendedKeyUsageOID.CLIENT_AUTH,
                      key_name="{}-key.pem")  # asyncua's client goes by the file name
    return station, plc


@pytest.fixture()
def trust_list(tmp_path, pki):
    """A trust directory as commissioning leaves it: the PLC's certificate converted to DER, an expired client
    certificate (PEM) and a hidden file; the expired pair is returned with it."""
    _, (plc_certificate, _) = pki
    directory = tmp_path / "trusted"
    directory.mkdir()
    der = x509.load_pem_x509_certificate(plc_certificate.read_bytes()).public_bytes(Encoding.DER)
    (directory / "plc.der").write_bytes(der)
    old_plc = expired(tmp_path, "old-plc", "urn:example:plc")
    shutil.copy(old_plc[0], directory / "old-plc.pem")
    (directory / ".gitkeep").write_bytes(b"")
    return directory, old_plc


@pytest.fixture()
def trusting_station(pki, trust_list):
    """A secured station with the trust list: (endpoint, handshake, requests) while it runs."""
    (certificate, key), _ = pki
    endpoint, front_end, handshake, requests = station(OpcUaSecurity(certificate, key,
                                                                     trusted_clients=trust_list[0]))
    try:
        yield endpoint, handshake, requests
    finally:
        front_end.stop()
        handshake.stop()


def refusals(caplog, certificate_file: Path) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "inspector.service.plc.opcua_security" and "refused" in record.getMessage()
            and fingerprint(certificate_file) in record.getMessage()]


def station(security: OpcUaSecurity):
    """A running OPC UA front end on a handshake (no detector: a trigger is answered by the test)."""
    requests = []
    handshake = Handshake(requests.append, lambda *args, **kwargs: None)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    front_end = OpcUaFrontEnd(endpoint, "line1", handshake, lambda name, who: (False, "no recipes"), security)
    handshake.start()
    front_end.start()
    return endpoint, front_end, handshake, requests


def use_certificate(client, pair, mode=ua.MessageSecurityMode.SignAndEncrypt) -> None:
    """``client`` presents ``pair`` (certificate, key) as the PLC's application over Basic256Sha256."""
    client.application_uri = "urn:example:plc"
    client.set_security(SecurityPolicyBasic256Sha256, str(pair[0]), str(pair[1]), mode=mode)


def secure_client(endpoint: str, plc_pki, mode=ua.MessageSecurityMode.SignAndEncrypt):
    client = asyncua.sync.Client(endpoint, timeout=10)
    use_certificate(client, plc_pki, mode)
    client.connect()
    return client


@contextmanager
def refused_client(endpoint: str):
    """A sync client whose connect() is expected to fail: its event-loop thread is stopped here unless
    disconnect()/disconnect_socket() did; a thread left running keeps the test process from exiting."""
    client = asyncua.sync.Client(endpoint, timeout=10)
    try:
        yield client
    finally:
        if client.tloop.is_alive():
            client.tloop.stop()


def assert_refused(endpoint: str, pair, status, prepare=lambda client: None) -> None:
    """Connecting over SignAndEncrypt with ``pair`` (after ``prepare(client)``) fails with ``status``."""
    with refused_client(endpoint) as client:
        use_certificate(client, pair)
        prepare(client)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            client.connect()
        assert refused.value.code == status
        client.disconnect_socket()


def line_node(client, name: str):
    index = client.get_namespace_index(NAMESPACE)
    return client.nodes.objects.get_child([f"{index}:Inspector", f"{index}:line1", f"{index}:{name}"])


@pytest.mark.slow
def test_sign_and_encrypt_client_drives_the_handshake_and_unsecured_clients_are_refused(pki, monkeypatch):
    (certificate, key), plc_pki = pki
    endpoint, front_end, handshake, requests = station(OpcUaSecurity(certificate, key))
    try:
        client = secure_client(endpoint, plc_pki)
        try:
            policy = client.aio_obj.security_policy
            assert (policy.URI, policy.Mode) == (SecurityPolicyBasic256Sha256.URI,
                                                 ua.MessageSecurityMode.SignAndEncrypt)
            line_node(client, "PartId").write_value("SN-SECURE-1")
            line_node(client, "Trigger").write_value(True)
            wait_for(lambda: requests, 10, "the trigger over the encrypted channel")
            assert requests[0].part_id == "SN-SECURE-1"
            handshake.result(requests[0], "OK", 0)
            wait_for(lambda: line_node(client, "ResultValid").read_value(), 10, "ResultValid")
            assert line_node(client, "Verdict").read_value() == "OK"
        finally:
            client.disconnect()
        signed = secure_client(endpoint, plc_pki, ua.MessageSecurityMode.Sign)
        try:
            assert line_node(signed, "Verdict").read_value() == "OK"
        finally:
            signed.disconnect()

        # Policy None is not offered: a well-behaved client finds no endpoint for it ...
        with refused_client(endpoint) as plain, pytest.raises(ua.UaError, match="No matching endpoints"):
            plain.connect()
        # ... and one that skips that check is refused by the server when it activates its session.
        monkeypatch.setattr(asyncua.Client, "find_endpoint",
                            staticmethod(lambda endpoints, mode, uri: endpoints[0]))
        with refused_client(endpoint) as hostile:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                hostile.connect()
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
            hostile.disconnect_socket()
        assert len(requests) == 1
    finally:
        front_end.stop()
        handshake.stop()


@pytest.mark.slow
def test_unsecured_clients_only_when_explicitly_allowed(pki):
    (certificate, key), plc_pki = pki
    endpoint, front_end, handshake, _ = station(OpcUaSecurity(certificate, key, allow_unsecured=True))
    try:
        plain = asyncua.sync.Client(endpoint, timeout=10)
        plain.connect()
        secure = secure_client(endpoint, plc_pki)
        try:
            assert plain.aio_obj.security_policy.URI == "http://opcfoundation.org/UA/SecurityPolicy#None"
            assert line_node(plain, "Ready").read_value() is True
            assert line_node(secure, "Ready").read_value() is True
        finally:
            plain.disconnect()
            secure.disconnect()
    finally:
        front_end.stop()
        handshake.stop()


def test_certificate_settings_are_checked(tmp_path, pki):
    from pydantic import ValidationError

    from inspector.service import ServiceConfig

    (certificate, key), _ = pki
    opcua = "opc.tcp://127.0.0.1:4840"
    with pytest.raises(ValidationError, match="opcua_cert and opcua_key: give both"):
        ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_cert=certificate)
    with pytest.raises(ValidationError, match="opcua_key: .*missing.key is not a file"):
        ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_cert=certificate,
                      opcua_key=tmp_path / "missing.key")
    with pytest.raises(ValidationError, match="opcua_allow_unsecured: only with opcua_cert"):
        ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_allow_unsecured=True)
    config = ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_cert=certificate,
                           opcua_key=key)
    assert (config.opcua_cert, config.opcua_key, config.opcua_allow_unsecured) == (certificate, key, False)


def test_a_key_that_is_not_a_key_is_named_without_its_content(tmp_path, pki):
    (certificate, _), _ = pki
    bogus = tmp_path / "bogus.key"
    bogus.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n-----END PRIVATE KEY-----\n")
    handshake = Handshake(lambda request: None, lambda *args, **kwargs: None)
    front_end = OpcUaFrontEnd(f"opc.tcp://127.0.0.1:{free_port()}", "line1", handshake,
                              lambda name, who: (False, ""), OpcUaSecurity(certificate, bogus))
    from inspector.service.errors import ServiceError

    with pytest.raises(ServiceError) as failed:
        front_end.start()
    assert f"opcua_key: {bogus} is not an unencrypted private key" in str(failed.value)
    assert "SECRET" not in str(failed.value)


@pytest.mark.slow
def test_a_trusted_client_drives_the_handshake_as_before(pki, trusting_station):
    _, plc_pki = pki
    endpoint, handshake, requests = trusting_station
    client = secure_client(endpoint, plc_pki)
    try:
        assert client.aio_obj.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
        line_node(client, "PartId").write_value("SN-TRUSTED-1")
        line_node(client, "Trigger").write_value(True)
        wait_for(lambda: requests, 10, "the trigger of the trusted client")
        assert requests[0].part_id == "SN-TRUSTED-1"
        handshake.result(requests[0], "NG", 2)
        wait_for(lambda: line_node(client, "ResultValid").read_value(), 10, "ResultValid")
        assert (line_node(client, "Verdict").read_value(), line_node(client, "DefectCount").read_value()) == ("NG", 2)
        line_node(client, "Ack").write_value(True)
        wait_for(lambda: line_node(client, "Ready").read_value(), 10, "Ready after the Ack")
    finally:
        client.disconnect()
    signed = secure_client(endpoint, plc_pki, ua.MessageSecurityMode.Sign)
    try:
        assert line_node(signed, "ResultPartId").read_value() == "SN-TRUSTED-1"
    finally:
        signed.disconnect()


@pytest.mark.slow
def test_a_client_not_in_the_trust_list_is_refused_and_logged_with_its_fingerprint(tmp_path, pki, trusting_station,
                                                                                     caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="inspector.service.plc.opcua_security")
    _, plc_pki = pki
    endpoint, _, requests = trusting_station
    intruder = self_signed(tmp_path, "intruder", "urn:example:plc", ExtendedKeyUsageOID.CLIENT_AUTH,
                           key_name="{}-key.pem")
    assert_refused(endpoint, intruder, ua.StatusCodes.BadCertificateUntrusted)
    logged = wait_for(lambda: refusals(caplog, intruder[0]), 10, "the refusal in the log")
    assert len(logged) == 1, logged
    assert "not in opcua_trusted_clients" in logged[0] and "CN=intruder" in logged[0]

    # Naming the trusted PLC's (public) certificate in CreateSession does not help: the channel's counts.
    trusted_der = x509.load_pem_x509_certificate(plc_pki[0].read_bytes()).public_bytes(Encoding.DER)

    def claim_the_trusted_certificate(client) -> None:
        create_session = client.aio_obj.uaclient.create_session

        async def claiming_the_trusted_certificate(params):
            params.ClientCertificate = trusted_der
            return await create_session(params)

        monkeypatch.setattr(client.aio_obj.uaclient, "create_session", claiming_the_trusted_certificate)

    assert_refused(endpoint, intruder, ua.StatusCodes.BadCertificateUntrusted, claim_the_trusted_certificate)
    assert len(wait_for(lambda: refusals(caplog, intruder[0])[1:], 10, "the second refusal")) == 1
    assert not requests


@pytest.mark.slow
def test_an_expired_certificate_in_the_trust_list_is_refused(trust_list, trusting_station, caplog):
    caplog.set_level(logging.WARNING, logger="inspector.service.plc.opcua_security")
    endpoint, _, requests = trusting_station
    _, old_plc = trust_list
    assert_refused(endpoint, old_plc, ua.StatusCodes.BadCertificateTimeInvalid)
    logged = wait_for(lambda: refusals(caplog, old_plc[0]), 10, "the refusal in the log")
    assert len(logged) == 1 and "old-plc.pem in opcua_trusted_clients" in logged[0], logged
    assert not requests


def test_a_file_in_the_trust_list_that_is_no_certificate_fails_the_start_naming_it(tmp_path, pki, trust_list):
    from inspector.service.errors import ServiceError

    (certificate, key), (_, plc_key) = pki
    directory, _ = trust_list
    stray_key = directory / "plc-key.pem"  # the PLC's private key copied along with its certificate
    shutil.copy(plc_key, stray_key)
    handshake = Handshake(lambda request: None, lambda *args, **kwargs: None)
    front_end = OpcUaFrontEnd(f"opc.tcp://127.0.0.1:{free_port()}", "line1", handshake,
                              lambda name, who: (False, ""), OpcUaSecurity(certificate, key, trusted_clients=directory))
    with pytest.raises(ServiceError) as failed:
        front_end.start()
    message = str(failed.value)
    assert f"opcua_trusted_clients: {stray_key} is not an X.509 certificate (PEM or DER)" in message
    key_lines = [line for line in plc_key.read_text().splitlines() if line and not line.startswith("-----")]
    assert not any(line[:16] in message for line in key_lines)

    stray_key.unlink()
    notes = directory / "README.txt"
    notes.write_text("certificates of line 1\n")
    with pytest.raises(ValueError, match=f"opcua_trusted_clients: {notes} is not an X.509 certificate"):
        read_trusted_clients(OpcUaSecurity(certificate, key, trusted_clients=directory))


def test_an_empty_trust_list_trusts_nobody_and_says_so(tmp_path, pki, caplog):
    (certificate, key), _ = pki
    empty = tmp_path / "nobody"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="inspector.service.plc.opcua_security"):
        trusted = read_trusted_clients(OpcUaSecurity(certificate, key, trusted_clients=empty))
    assert trusted.files == {}
    assert f"no certificate in {empty}" in caplog.text


def test_the_trust_list_setting_is_checked(tmp_path, pki, trust_list):
    from pydantic import ValidationError

    from inspector.service import ServiceConfig

    (certificate, key), _ = pki
    directory, _ = trust_list
    opcua = "opc.tcp://127.0.0.1:4840"
    with pytest.raises(ValidationError, match="opcua_trusted_clients: only with opcua_cert"):
        ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_trusted_clients=directory)
    with pytest.raises(ValidationError, match="opcua_trusted_clients: .*missing is not a directory"):
        ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_cert=certificate,
                      opcua_key=key, opcua_trusted_clients=tmp_path / "missing")
    config = ServiceConfig(source="demo", http=None, data_dir=tmp_path, opcua=opcua, opcua_cert=certificate,
                           opcua_key=key, opcua_trusted_clients=directory)
    assert config.opcua_trusted_clients == directory
