"""moto's S3 server app on 127.0.0.1 that records who asked for what, over http or https.

Like moto's ``ThreadedMotoServer``, plus a record of every request (method,
path, access key of the signature), so tests can tell which settings reached
which server, and an optional TLS certificate of a private CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")


@dataclass
class S3Server:
    endpoint: str
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, method: str = "GET") -> list[str]:
        with self.lock:
            return [p for m, p, _ in self.requests if m == method]

    def keys_for(self, prefix: str) -> set[str | None]:
        """Access keys of the requests whose path starts with ``prefix``."""
        with self.lock:
            return {k for _, p, k in self.requests if p.startswith(prefix)}


@contextmanager
def recording_s3(cert: tuple[Path, Path] | None = None) -> Iterator[S3Server]:
    """A moto S3 server on a free port of 127.0.0.1; https when ``cert`` (cert, key) is given."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    holder: dict[str, S3Server] = {}

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        match = _ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
        server = holder["server"]
        with server.lock:
            server.requests.append(
                (environ["REQUEST_METHOD"], environ["PATH_INFO"], match and match.group(1))
            )
        return app(environ, start_response)

    ssl_context = (str(cert[0]), str(cert[1])) if cert else None
    httpd = make_server("127.0.0.1", 0, recording, threaded=True, ssl_context=ssl_context)
    scheme = "https" if cert else "http"
    holder["server"] = S3Server(f"{scheme}://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["server"]
    finally:
        httpd.shutdown()
        thread.join()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "s3-cert.pem", folder / "s3-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
