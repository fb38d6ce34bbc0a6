"""Codecs for values at rest: what the engine stores in place of a state's (or payload's) JSON text.

A codec turns the UTF-8 bytes of a stored JSON value (a step's state and changes, a flow's final state,
interrupt payloads, resume data, baggage, a child flow's result) into other bytes and back. The engine
applies the codecs it was given in order when it writes (compress, then encrypt) and in reverse order
when it reads, and stores the result as text that names every codec (and key) that wrote it, so that a
database may mix plaintext rows, rows of an old key and rows of the current one. A ``BlobStore`` takes
the largest values out of the database altogether, leaving only a reference in the row.

    engine = Engine(
        host=host,
        codec=[ZlibCodec(), AESGCMCodec({"2024-06": key})],
        max_state_size=1_000_000,
    )

Everything here is independent of the engine and of any database: see docs/codecs.md.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from dwarf._extras import missing_extra
from dwarf.errors import BadRequestError, CodecError

__all__ = ["AESGCMCodec", "BlobStore", "Codec", "ZlibCodec"]

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""A codec's name: lower-case letters, digits, '-' and '_', starting with a letter (at most 32)."""

KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A key id (the part of a codec id after the name and a dot)."""


@runtime_checkable
class Codec(Protocol):
    """One reversible transformation of a stored value's bytes (a compression, an encryption).

    ``name`` is stable and written with every value the codec encoded; ``encode`` returns the *codec
    id* to store with the result: the name itself, or ``name.key_id`` when the codec has several keys
    (the id must match ``NAME_PATTERN``, then optionally ``.`` and ``KEY_ID_PATTERN``). ``decode``
    receives that id back. Both run on the engine's database path (see docs/codecs.md#writing-a-codec):
    keep them CPU-bound and fast, and never put the value or key material into an exception.
    """

    name: str

    def encode(self, data: bytes) -> tuple[str, bytes] | None:
        """``(codec id, encoded bytes)``, or None to leave ``data`` as it is (the layer does not apply)."""
        ...

    def decode(self, codec_id: str, data: bytes) -> bytes:
        """Undo ``encode`` of a value stored with ``codec_id``; CodecError when that cannot be done (an
        unknown key, an altered value)."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Where values too large for a row go (the application's object store, a file system).

    ``put`` stores ``data`` (already encoded: compressed and encrypted when codecs are set) and returns
    the reference the row keeps instead: text of at most 1024 characters without NUL. ``key`` is the
    SHA-256 of ``data`` in hex: using it as the object name makes a repeated ``put`` (a step that runs
    again after a crash) write the same object. ``get`` returns what ``put`` stored under a reference.
    Both are synchronous and run on the engine's database path (see docs/codecs.md#offloading-large-values).
    Deleting flows does not delete their blobs: expire them with the store's own lifecycle rules.
    """

    def put(self, key: str, data: bytes) -> str:
        """Store ``data``; return its reference."""
        ...

    def get(self, ref: str) -> bytes:
        """The bytes stored under ``ref``."""
        ...


class ZlibCodec:
    """Compression with the standard library's zlib, for values of at least ``min_bytes`` bytes.

    Smaller values, and values that compression would not shrink, are left as they are (with no other
    codec they then stay plain JSON in the database).
    """

    name = "zlib"

    def __init__(self, *, level: int = 6, min_bytes: int = 1024) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise BadRequestError("the zlib level must be an integer from 1 to 9")
        if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
            raise BadRequestError("min_bytes must be a non-negative integer")
        self.level = level
        self.min_bytes = min_bytes

    def __repr__(self) -> str:
        return f"ZlibCodec(level={self.level}, min_bytes={self.min_bytes})"

    def encode(self, data: bytes) -> tuple[str, bytes] | None:
        if len(data) < self.min_bytes:
            return None
        packed = zlib.compress(data, self.level)
        return ("zlib", packed) if len(packed) < len(data) else None

    def decode(self, codec_id: str, data: bytes) -> bytes:
        try:
            return zlib.decompress(data)
        except zlib.error:
            raise CodecError(
                f"a value stored with codec {codec_id!r} is not valid zlib data", codec_id=codec_id
            ) from None


_NONCE_BYTES = 12


class AESGCMCodec:
    """Encryption with AES-GCM under keys the application supplies, with key rotation.

    ``keys`` maps key ids to keys of 16, 24 or 32 bytes (``AESGCMCodec.generate_key()`` makes one).
    Values are encrypted with the ``current`` key (the only one when there is one) and stored with the
    codec id ``aesgcm.<key id>``; values of every key in ``keys`` decrypt, so rotating is: add the new key
    to every replica, then make it current, and drop an old key only after re-encoding its values
    (``Engine.reencode``). A random 96-bit nonce is drawn per value: rotate a key before it encrypted
    about 2**32 values. The codec id is authenticated with the value, so a value relabelled with another
    key id fails to decrypt. Needs the ``crypto`` extra (the ``cryptography`` package).
    """

    name = "aesgcm"

    def __init__(self, keys: Mapping[str, bytes], current: str | None = None) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as error:
            raise missing_extra("AESGCMCodec (encryption at rest)", "crypto", error) from error
        if not isinstance(keys, Mapping) or not keys:
            raise BadRequestError("AESGCMCodec needs at least one key: a mapping of key id to key bytes")
        ciphers: dict[str, Any] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
                raise BadRequestError(
                    "key ids must be 1 to 64 letters, digits, '-' or '_' (they are stored with every value)"
                )
            if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
                # The key itself never goes into a message.
                raise BadRequestError(f"key {key_id!r} must be 16, 24 or 32 bytes")
            ciphers[key_id] = AESGCM(bytes(key))
        if current is None:
            if len(ciphers) != 1:
                raise BadRequestError(
                    "AESGCMCodec with several keys needs current=<the key id to encrypt with>"
                )
            current = next(iter(ciphers))
        if current not in ciphers:
            raise BadRequestError(f"the current key {current!r} is not one of the keys")
        self._ciphers = ciphers
        self.current = current
        self._current_id = f"aesgcm.{current}"
        self._current_aad = self._current_id.encode()

    def __repr__(self) -> str:
        # Key ids only: never the keys.
        return f"AESGCMCodec(key_ids={sorted(self._ciphers)!r}, current={self.current!r})"

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys this codec decrypts with (sorted)."""
        return sorted(self._ciphers)

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key (keep it in a secret manager, not in code)."""
        return os.urandom(32)

    def encode(self, data: bytes) -> tuple[str, bytes] | None:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, data, self._current_aad)
        return self._current_id, nonce + sealed

    def decode(self, codec_id: str, data: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        key_id = codec_id.partition(".")[2]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(
                f"a value was encrypted with key {key_id!r}, which this engine's AESGCMCodec does not hold "
                f"(it holds {', '.join(repr(k) for k in sorted(self._ciphers))})",
                codec_id=codec_id,
            )
        if len(data) < _NONCE_BYTES + 16:
            raise CodecError(f"a value stored with codec {codec_id!r} is truncated", codec_id=codec_id)
        try:
            return bytes(cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], codec_id.encode()))
        except InvalidTag:
            raise CodecError(
                f"a value stored with codec {codec_id!r} fails its integrity check: the key is not the one "
                "it was encrypted with, or the value was altered",
                codec_id=codec_id,
            ) from None
