"""Server-side TLS: a listener's certificate chain and key as an OpenSSL context factory.

Every fault (unreadable file, not PEM, a key that does not belong to the certificate)
is a :class:`~stubserver.config.ConfigError` naming the setting, raised before anything
is served. TLS 1.2 is the minimum, as the spec's "TLS" section asks of federation.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

from stubserver.config import ConfigError

#: Largest certificate or key file we read, in bytes.
MAX_PEM_BYTES = 1024 * 1024

_SUPPORTED_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
ServerPrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def _read(key: str, path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(key, f"{path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def load_certificate_chain(key: str, path: Path) -> list[x509.Certificate]:
    """The PEM certificates in ``path``, leaf first; ConfigError when there are none."""
    data = _read(key, path)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(key, f"{path} holds no PEM certificate") from None
    return chain


def load_private_key(key: str, path: Path) -> ServerPrivateKey:
    """The unencrypted PEM private key in ``path``."""
    data = _read(key, path)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(key, f"{path} is encrypted; an unencrypted key is needed") from None
    except (ValueError, crypto.Error):
        raise ConfigError(key, f"{path} holds no PEM private key") from None
    if not isinstance(private, _SUPPORTED_KEY_TYPES):
        raise ConfigError(key, f"{path}: {type(private).__name__} cannot sign TLS handshakes")
    return private


def _public_der(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_key_pair(
    cert_path: Path,
    key_path: Path,
    *,
    cert_key: str = "tls_certificate_path",
    key_key: str = "tls_private_key_path",
) -> tuple[list[x509.Certificate], ServerPrivateKey]:
    """The certificate chain in ``cert_path`` and the key in ``key_path``, checked to
    belong together (ConfigError naming ``cert_key`` or ``key_key`` otherwise)."""
    chain = load_certificate_chain(cert_key, cert_path)
    private = load_private_key(key_key, key_path)
    if _public_der(chain[0].public_key()) != _public_der(private.public_key()):
        raise ConfigError(
            key_key, f"{key_path} is not the private key of the certificate in {cert_path}"
        )
    return chain, private


def server_tls_options(
    cert_path: Path,
    key_path: Path,
    *,
    cert_key: str = "tls_certificate_path",
    key_key: str = "tls_private_key_path",
) -> CertificateOptions:
    """TLS options serving ``cert_path`` (leaf, then intermediates) with ``key_path``.

    ``cert_key`` and ``key_key`` name the settings in errors. The OpenSSL context is
    built here, so every fault shows now rather than at the first handshake.
    """
    chain, private = load_key_pair(cert_path, key_path, cert_key=cert_key, key_key=key_key)
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(private),
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise ConfigError(cert_key, f"OpenSSL refuses {cert_path} with {key_path}: {e}") from None
    return options
