"""The VAPID key of Web Push (RFC 8292): the P-256 key pair this deployment signs its push
messages with, read from ``JOBPROGRESS_VAPID_PRIVATE_KEY``, and base64url, the encoding
every Web Push key travels in (no padding)."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["VapidKeyError", "b64url", "b64url_decode", "public_key_b64url", "vapid_private_key"]


class VapidKeyError(ValueError):
    """Not a P-256 private key in a form we read."""


def b64url(data: bytes) -> str:
    """``data`` in base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of base64url ``text`` (padding optional); :class:`ValueError` otherwise."""
    if not text.isascii() or any(char in text for char in "+/ \r\n\t"):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def vapid_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of ``text``: PEM (PKCS#8 or SEC1), or base64url of either its
    32-byte secret scalar (what most Web Push tools print) or its DER."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text.replace("\n", ""))
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise VapidKeyError(
            f"not a PEM, DER or 32-byte base64url private key ({exc.__class__.__name__})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VapidKeyError("VAPID keys are ECDSA P-256 (prime256v1) keys")
    return key


def public_key_b64url(key: ec.EllipticCurvePrivateKey) -> str:
    """The public half of ``key`` as a browser's ``applicationServerKey`` takes it: the
    65-byte uncompressed point, base64url."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)
