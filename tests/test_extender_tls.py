"""TLS where the extender is reached over the network (issue 9 point 11).

`epcsched extender --tls-cert --tls-key [--tls-client-ca]`, as a real process, with a CA, a
serving certificate and client certificates made for the test: it serves HTTPS; with a client CA
a client must present a certificate that CA signed (mutual TLS, as kube-scheduler's extender
`tlsConfig` does), so a client without one, or with one from another CA, is refused at the
handshake. A certificate rotated in place (as cert-manager does) is served to the next
connection without a restart; a half-written rotation keeps the old one. Flag mistakes are one
line.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from epcsched.cli import main
from tests.helpers import cluster, node, pod

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Issued:
    cert: Path
    key: Path
    serial: int


class Authority:
    """A CA that writes PEM files into a directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool, stem: str | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = stem or common_name
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Issued(cert_path, key_path, cert.serial_number)


def ipaddress(text: str) -> object:
    import ipaddress as ip

    return ip.ip_address(text)


def client_context(ca: Authority, client: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def served_serial(port: int, context: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def post_filter(port: int, context: ssl.SSLContext) -> dict[str, object]:
    import http.client

    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    body = json.dumps({"Pod": pod("p", "1Mi"), "NodeNames": ["a"]})
    connection.request("POST", "/filter", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    reply: dict[str, object] = json.loads(response.read())
    connection.close()
    return reply


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = Authority(tmp_path, "ca")
    other = Authority(tmp_path, "other-ca")
    return {
        "ca": ca,
        "server": ca.issue("epcsched-extender", server=True, stem="serving"),
        "client": ca.issue("kube-scheduler", server=False),
        "stranger": other.issue("someone", server=False),
    }


@pytest.fixture
def extender(tmp_path: Path, pki: dict[str, object]) -> Iterator[tuple[int, list[str]]]:
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps(cluster(node("a", "1Gi"))))
    ca, server = pki["ca"], pki["server"]
    assert isinstance(ca, Authority) and isinstance(server, Issued)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "epcsched",
            "extender",
            "--snapshot",
            str(snapshot),
            "--port",
            "0",
            "--log-format",
            "json",
            "--tls-cert",
            str(server.cert),
            "--tls-key",
            str(server.key),
            "--tls-client-ca",
            str(ca.path),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        first = json.loads(proc.stderr.readline())
        assert "https://" in first["message"], first
        assert "client certificates required" in first["message"]
        port = int(first["address"].rsplit(":", 1)[1])
        yield port, []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mutual_tls_and_rotation(
    extender: tuple[int, list[str]], pki: dict[str, object], tmp_path: Path
) -> None:
    port, _ = extender
    ca, server, client, stranger = pki["ca"], pki["server"], pki["client"], pki["stranger"]
    assert isinstance(ca, Authority)
    assert isinstance(server, Issued) and isinstance(client, Issued)
    assert isinstance(stranger, Issued)

    good = client_context(ca, client)
    assert post_filter(port, good)["NodeNames"] == ["a"]
    assert served_serial(port, good) == server.serial

    # No client certificate, or one another CA signed: refused at the handshake.
    for refused in (client_context(ca, None), client_context(ca, stranger)):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            post_filter(port, refused)
    # Plain HTTP to the HTTPS port gets no answer from the extender either.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert b'"NodeNames"' not in raw.recv(4096)

    # A half-written rotation (new certificate, old key) is not taken up.
    staged = ca.issue("epcsched-extender", server=True, stem="staged")
    shutil.copyfile(staged.cert, server.cert)
    time.sleep(3)
    assert served_serial(port, good) == server.serial
    # The key follows: the next connection gets the new certificate, without a restart.
    shutil.copyfile(staged.key, server.key)
    deadline = time.monotonic() + 10
    while served_serial(port, good) != staged.serial:
        assert time.monotonic() < deadline, "the rotated certificate was not served"
        time.sleep(0.2)
    assert post_filter(port, good)["NodeNames"] == ["a"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key: give both"),
        (["--tls-client-ca", "{ca}"], "--tls-client-ca: needs --tls-cert and --tls-key"),
        (["--tls-cert", "{cert}", "--tls-key", "{missing}"], "--tls-key:"),
        (["--tls-cert", "{ca}", "--tls-key", "{key}"], "key values mismatch"),
    ],
)
def test_tls_flag_mistakes_are_one_line(
    tmp_path: Path,
    pki: dict[str, object],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    ca, server = pki["ca"], pki["server"]
    assert isinstance(ca, Authority) and isinstance(server, Issued)
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps(cluster(node("a", "1Gi"))))
    values = {
        "cert": str(server.cert),
        "key": str(server.key),
        "ca": str(ca.path),
        "missing": str(tmp_path / "nope.key"),
    }
    argv = ["extender", "--snapshot", str(snapshot), "--port", "0"]
    assert main(argv + [a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
