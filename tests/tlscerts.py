"""A throwaway PKI for TLS tests: CAs, a server and client certificates.

``make_pki(directory)`` writes PEM files (EC P-256 keys, valid from a day ago
for 30 days) and returns an object with their paths:

- ``ca``: the CA certificate; ``other_ca``: an unrelated second CA;
- ``server_cert``, ``server_key``: for DNS ``localhost`` and IP 127.0.0.1,
  signed by ``ca``;
- ``chained_cert``, ``chained_key``: the same names, signed by an
  intermediate CA under ``ca``; the cert file holds leaf then intermediate;
- ``client_cert(common_name, issuer="ca")`` -> (cert_path, key_path), a client
  certificate signed by ``ca`` (or ``"other_ca"``), made on demand.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(ca):
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _certificate(subject, key, issuer=None, issuer_key=None, ca=False, extra=()):
    """Sign ``subject``/``key`` with ``issuer`` (a certificate), or self-sign."""
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name = issuer.subject if issuer is not None else _name(subject)
    signing_key = issuer_key if issuer_key is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    )
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path, *items):
    with open(path, "wb") as handle:
        for item in items:
            if isinstance(item, x509.Certificate):
                handle.write(item.public_bytes(serialization.Encoding.PEM))
            else:
                handle.write(item.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ))
    return path


_SERVER_EXTENSIONS = (
    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    x509.SubjectAlternativeName([
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]),
)


class PKI:
    def __init__(self, directory):
        self.directory = str(directory)
        self._authorities = {}
        self._clients = 0
        for label, name in (("ca", "FlowMQ Test CA"), ("other_ca", "Other Test CA")):
            key = _key()
            cert = _certificate(name, key, ca=True)
            self._authorities[label] = (cert, key)
            setattr(self, label, _write(self._path(label + ".pem"), cert))
        ca_cert, ca_key = self._authorities["ca"]

        key = _key()
        cert = _certificate("localhost", key, ca_cert, ca_key, extra=_SERVER_EXTENSIONS)
        self.server_cert = _write(self._path("server.pem"), cert)
        self.server_key = _write(self._path("server.key"), key)

        intermediate_key = _key()
        intermediate = _certificate("FlowMQ Test Intermediate", intermediate_key, ca_cert, ca_key, ca=True)
        key = _key()
        cert = _certificate("localhost", key, intermediate, intermediate_key, extra=_SERVER_EXTENSIONS)
        self.chained_cert = _write(self._path("chained.pem"), cert, intermediate)
        self.chained_key = _write(self._path("chained.key"), key)

    def _path(self, name):
        return os.path.join(self.directory, name)

    def client_cert(self, common_name, issuer="ca"):
        """A client certificate for ``common_name``: (cert_path, key_path)."""
        ca_cert, ca_key = self._authorities[issuer]
        key = _key()
        cert = _certificate(
            common_name, key, ca_cert, ca_key,
            extra=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),),
        )
        self._clients += 1
        stem = "client-%d" % self._clients
        return _write(self._path(stem + ".pem"), cert), _write(self._path(stem + ".key"), key)


def make_pki(directory) -> PKI:
    return PKI(directory)
