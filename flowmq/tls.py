"""TLS for FlowMQ's listeners, built on Twisted's own TLS.

``server_options`` turns the ``tls.*`` settings (PEM files) into a
``twisted.internet.ssl.CertificateOptions`` for ``SSL4ServerEndpoint`` or
``listenSSL``, raising ``TLSConfigError`` (setting and path named) for any
bad file. ``peer_identity`` reads the verified client certificate of a
connection after its handshake.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)


class TLSConfigError(Exception):
    """A ``tls.*`` setting names a file that cannot be used."""

    def __init__(self, setting: str, path: str | None, reason: str):
        self.setting = setting
        self.path = path
        self.reason = reason
        if path is None:
            super().__init__("%s: %s" % (setting, reason))
        else:
            super().__init__("%s: cannot load %s: %s" % (setting, path, reason))


def _read(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise TLSConfigError(setting, path, exc.strerror or str(exc)) from exc


def _load_certificates(setting: str, path: str) -> list:
    """Every certificate in a PEM file, in file order (cryptography objects)."""
    data = _read(setting, path)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(setting, path, "no valid PEM certificate in it") from exc


_SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _load_key(setting: str, path: str):
    data = _read(setting, path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted: needs a password
        raise TLSConfigError(setting, path, "the key is encrypted; an unencrypted key is needed") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TLSConfigError(setting, path, "no valid PEM private key in it") from exc
    if not isinstance(key, _SIGNING_KEYS):
        raise TLSConfigError(setting, path, "not a signing key (RSA, EC, DSA, Ed25519 or Ed448)")
    return key


def _public_key_bytes(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def server_options(
    cert: str, key: str, ca: str | None = None, verify_clients: bool = False, names: str = "tls."
) -> CertificateOptions:
    """TLS options for a listener (TLS 1.2 minimum).

    ``cert``: PEM file, the server certificate first, then any intermediates
    (sent to clients as the chain). ``key``: its unencrypted PEM private key.
    ``ca``: PEM file of the CA(s) that sign client certificates; when given,
    the server asks for a client certificate and verifies one if sent. With
    ``verify_clients`` a client certificate signed by ``ca`` is required
    (the handshake fails without one); without it, a client may send none.
    ``names`` prefixes the setting names in errors (a listener's own TLS).
    """
    chain = _load_certificates(names + "cert", cert)
    private_key = _load_key(names + "key", key)
    if _public_key_bytes(private_key.public_key()) != _public_key_bytes(chain[0].public_key()):
        raise TLSConfigError(names + "key", key, "it is not the key of the certificate in %s" % cert)
    # Twisted hands these to pyOpenSSL's Context, which takes cryptography
    # objects (and deprecates its own X509/PKey there since pyOpenSSL 25.x).
    options = {
        "privateKey": private_key,
        "certificate": chain[0],
        "extraCertChain": chain[1:],
        "raiseMinimumTo": TLSVersion.TLSv1_2,
    }
    if ca:
        authorities = [crypto.X509.from_cryptography(c) for c in _load_certificates(names + "ca", ca)]
        if verify_clients:
            options["trustRoot"] = trustRootFromCertificates([Certificate(c) for c in authorities])
        else:
            # trustRoot always requires a certificate (Twisted sets
            # requireCertificate=True with it); only the older verify/caCerts
            # arguments can ask for one without requiring it.
            options.update(verify=True, caCerts=authorities, requireCertificate=False)
    elif verify_clients:
        raise TLSConfigError(names + "verify", None, "needs %sca, the CA that signs client certificates" % names)
    result = CertificateOptions(**options)
    try:
        result.getContext()  # OpenSSL's own checks now, not at the first client
    except SSL.Error as exc:
        raise TLSConfigError(names + "cert", cert, "OpenSSL refuses it with key %s: %s" % (key, exc)) from exc
    return result


def peer_identity(transport) -> tuple[str, str] | None:
    """(common name, RFC 4514 subject) of the peer's certificate, or None.

    None when the peer sent no certificate or the transport is not TLS. Call
    after the handshake (``IHandshakeListener.handshakeCompleted``). With
    several CN attributes the last (most specific) is taken; with none the
    common name is "".
    """
    get_certificate = getattr(transport, "getPeerCertificate", None)
    if get_certificate is None:
        return None
    certificate = get_certificate()
    if certificate is None:
        return None
    subject = certificate.to_cryptography().subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[-1].value if names else ""
    if isinstance(common_name, bytes):
        common_name = common_name.decode("utf-8", "replace")
    return common_name, subject.rfc4514_string()
