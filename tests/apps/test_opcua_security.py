"""OPC UA security of the PLC server (inspector/service/plc/opcua_security.py): a self-signed station certificate
made in tmp, a real asyncua client over Basic256Sha256 SignAndEncrypt driving the handshake, and unsecured
clients refused -- also one that skips the client-side endpoint check, which the server itself must refuse."""
from __future__ import annotations

from contextlib import contextmanager
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
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

from inspector.service.plc import Handshake  # noqa: E402
from inspector.service.plc.opcua import OpcUaFrontEnd  # noqa: E402
from inspector.service.plc.opcua_security import OpcUaSecurity  # noqa: E402
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


@pytest.fixture()
def pki(tmp_path):
    # The station's pair as operators often have it: a DER certificate, a PEM key named .key (told apart by content).
    station = self_signed(tmp_path, "station", "urn:pcb-inspector:line1", ExtendedKeyUsageOID.SERVER_AUTH,
                          encoding=Encoding.DER)
    plc = self_signed(tmp_path, "plc", "urn:example:plc", ExtendedKeyUsageOID.CLIENT_AUTH,
                      key_name="{}-key.pem")  # asyncua's client goes by the file name
    return station, plc


def station(security: OpcUaSecurity):
    """A running OPC UA front end on a handshake (no detector: a trigger is answered by the test)."""
    requests = []
    handshake = Handshake(requests.append, lambda *args, **kwargs: None)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    front_end = OpcUaFrontEnd(endpoint, "line1", handshake, lambda name, who: (False, "no recipes"), security)
    handshake.start()
    front_end.start()
    return endpoint, front_end, handshake, requests


def secure_client(endpoint: str, plc_pki, mode=ua.MessageSecurityMode.SignAndEncrypt):
    client = asyncua.sync.Client(endpoint, timeout=10)
    client.application_uri = "urn:example:plc"
    client.set_security(SecurityPolicyBasic256Sha256, str(plc_pki[0]), str(plc_pki[1]), mode=mode)
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
