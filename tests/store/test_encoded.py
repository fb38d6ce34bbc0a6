"""The codecs and the stored form of values (docs/codecs.md), without a database: compression, AES-GCM
with a keyring, the envelope that names them, the size guard, offloading, and the errors of values this
engine cannot decode."""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import random
import re
import sys
from typing import Any

import pytest

from dwarf import AESGCMCodec, BadRequestError, Codec, CodecError, Engine, StateTooLargeError, ZlibCodec
from dwarf.errors import EngineStateError
from dwarf.store.encoded import PREFIX, Undecodable, ValueCoder, encoded_value_error
from dwarf.store.rows import parse_json

KEY1 = bytes(range(32))
KEY2 = bytes(range(32, 64))
BIG = json.dumps({"notes": "lorem ipsum " * 400, "ssn": "123-45-6789"})


def stored(coder: ValueCoder, text: str, what: str = "state") -> str:
    """The stored form of ``text`` (the coder's ``encode`` hands it to a target)."""
    out = {"v": text}
    assert coder.encode(text, what, lambda value: out.__setitem__("v", value)) is None
    return out["v"]


def read(coder: ValueCoder, text: str, column: str = "state") -> Any:
    row = {column: text}
    coder.fetch(coder.decode_rows([row]))
    return parse_json(row[column])


class MemoryBlobs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fail = False

    def put(self, key: str, data: bytes) -> str:
        self.blobs[key] = data
        return f"mem://{key}"

    def get(self, ref: str) -> bytes:
        if self.fail:
            raise OSError("the bucket is down: secret-in-message")
        return self.blobs[ref.removeprefix("mem://")]


def test_zlib_compresses_values_above_its_threshold_and_leaves_small_ones_plain() -> None:
    coder = ValueCoder([ZlibCodec(min_bytes=100)])
    small = '{"a":1}'
    assert stored(coder, small) == small
    big = stored(coder, BIG)
    assert big.startswith("dwarf:zlib:") and len(big) < len(BIG) / 3
    assert read(coder, big) == json.loads(BIG)


def test_zlib_leaves_a_value_it_cannot_shrink_as_it_is() -> None:
    assert ZlibCodec(min_bytes=0).encode(random.Random(7).randbytes(4000)) is None


def test_aes_gcm_round_trips_and_names_its_key_in_the_stored_value() -> None:
    coder = ValueCoder([AESGCMCodec({"k1": KEY1})])
    text = stored(coder, '{"ssn":"123-45-6789"}')
    assert text.startswith("dwarf:aesgcm.k1:") and "123-45" not in text
    assert read(coder, text) == {"ssn": "123-45-6789"}
    # A random nonce per value: the same value stores differently each time.
    assert stored(coder, '{"ssn":"123-45-6789"}') != text


def test_compress_then_encrypt_lists_both_codecs_in_the_order_they_were_applied() -> None:
    coder = ValueCoder([ZlibCodec(), AESGCMCodec({"k1": KEY1})])
    text = stored(coder, BIG)
    assert text.startswith("dwarf:zlib+aesgcm.k1:")
    assert len(text) < len(BIG) / 3  # compressed before encryption, which would leave nothing to compress
    assert read(coder, text) == json.loads(BIG)
    # A small value is encrypted only.
    assert stored(coder, '{"a":1}').startswith("dwarf:aesgcm.k1:")


def test_a_keyring_encrypts_with_the_current_key_and_decrypts_with_any() -> None:
    old = ValueCoder([AESGCMCodec({"k1": KEY1})])
    rotated = ValueCoder([AESGCMCodec({"k1": KEY1, "k2": KEY2}, current="k2")])
    written_before = stored(old, '{"v":1}')
    written_after = stored(rotated, '{"v":2}')
    assert written_after.startswith("dwarf:aesgcm.k2:")
    assert read(rotated, written_before) == {"v": 1}
    assert read(rotated, written_after) == {"v": 2}


def test_a_value_of_an_unknown_key_raises_a_codec_error_naming_the_key_and_no_key_material() -> None:
    written = stored(ValueCoder([AESGCMCodec({"k1": KEY1})]), '{"ssn":"123-45-6789"}')
    other = ValueCoder([AESGCMCodec({"k2": KEY2})])
    with pytest.raises(CodecError) as caught:
        read(other, written)
    message = str(caught.value)
    assert "'k1'" in message and caught.value.codec_id == "aesgcm.k1"
    for secret in (KEY1, KEY2):
        assert secret.hex() not in message and repr(secret) not in message
    assert "123-45" not in message


def test_a_value_under_the_right_key_id_but_another_key_fails_its_integrity_check() -> None:
    written = stored(ValueCoder([AESGCMCodec({"k1": KEY1})]), '{"v":1}')
    impostor = ValueCoder([AESGCMCodec({"k1": KEY2})])
    with pytest.raises(CodecError, match="integrity"):
        read(impostor, written)


def test_an_altered_or_relabelled_value_fails_its_integrity_check() -> None:
    coder = ValueCoder([AESGCMCodec({"k1": KEY1, "k2": KEY1}, current="k1")])
    written = stored(coder, '{"v":1}')
    chain, payload = written[len(PREFIX) :].split(":", 1)
    data = bytearray(base64.b64decode(payload))
    data[-1] ^= 1
    with pytest.raises(CodecError, match="integrity"):
        read(coder, f"{PREFIX}{chain}:{base64.b64encode(bytes(data)).decode()}")
    # The same bytes under another key id (here the same key): the id is authenticated with the value.
    with pytest.raises(CodecError, match="integrity"):
        read(coder, written.replace("aesgcm.k1", "aesgcm.k2"))


def test_an_engine_without_codecs_names_the_codecs_that_wrote_a_value() -> None:
    written = stored(ValueCoder([ZlibCodec(), AESGCMCodec({"k1": KEY1})]), BIG)
    with pytest.raises(CodecError) as caught:
        parse_json(written)
    assert caught.value.codec_id == "zlib+aesgcm.k1"
    assert "no codecs set" in str(caught.value)
    assert encoded_value_error('{"a":1}') is None


def test_a_codec_this_engine_does_not_have_is_named_in_the_error() -> None:
    written = stored(ValueCoder([ZlibCodec(min_bytes=0)]), BIG)
    with pytest.raises(CodecError, match=r"'zlib'.*does not have"):
        read(ValueCoder([AESGCMCodec({"k1": KEY1})]), written)


def test_plain_json_reads_through_any_coder() -> None:
    coder = ValueCoder([ZlibCodec(), AESGCMCodec({"k1": KEY1})])
    assert read(coder, '{"plain":true}') == {"plain": True}


def test_empty_values_and_state_references_are_never_encoded() -> None:
    coder = ValueCoder([AESGCMCodec({"k1": KEY1})])
    params = {"state": "", "changes": "{}", "baggage": "null", "carry": '{"a":1}', "error": "boom"}
    assert coder.encode_params(params) == []
    assert params["state"] == "" and params["changes"] == "{}" and params["baggage"] == "null"
    assert params["carry"].startswith("dwarf:aesgcm.k1:") and params["error"] == "boom"


def test_branch_states_are_encoded_and_keep_their_plain_size() -> None:
    coder = ValueCoder([AESGCMCodec({"k1": KEY1})])
    branches = [
        {"token": "t", "state": '{"item":1}', "ordinal": 0},
        {"token": "u", "state": "{}", "ordinal": 1},
    ]
    params = {"branches": json.dumps(branches)}
    coder.encode_params(params)
    written = json.loads(params["branches"])
    assert written[0]["state"].startswith("dwarf:aesgcm.k1:") and written[0]["bytes"] == len('{"item":1}')
    assert written[1]["state"] == "{}" and written[1]["bytes"] == 2


def test_the_size_guard_counts_characters_of_json_text() -> None:
    coder = ValueCoder(max_size=10)
    assert stored(coder, '{"a":"12"}') == '{"a":"12"}'
    with pytest.raises(StateTooLargeError) as caught:
        stored(coder, '{"a":"123"}', "changes")
    error = caught.value
    assert (error.size, error.limit, error.what, error.status_code) == (11, 10, "changes", 413)
    assert isinstance(error, BadRequestError) and "max_state_size" in str(error)


def test_large_values_go_to_the_blob_store_and_come_back() -> None:
    blobs = MemoryBlobs()
    coder = ValueCoder([ZlibCodec(min_bytes=0), AESGCMCodec({"k1": KEY1})], blobs=blobs, offload_above=64)
    params = {"state": BIG, "changes": '{"a":1}'}
    pending = coder.encode_params(params)
    assert len(pending) == 1 and params["state"] == BIG  # not stored until offloaded
    coder.offload(pending)
    ((key, data),) = blobs.blobs.items()
    assert key == hashlib.sha256(data).hexdigest() and b"123-45" not in data
    assert params["state"] == f"dwarf:zlib+aesgcm.k1:@mem://{key}"
    assert not params["changes"].count("@")
    row = dict(params)
    fetches = coder.decode_rows([row])
    coder.fetch(fetches)
    assert json.loads(row["state"]) == json.loads(BIG)


def test_offloading_works_without_any_codec() -> None:
    blobs = MemoryBlobs()
    coder = ValueCoder(blobs=blobs, offload_above=100)
    params = {"final_state": BIG}
    coder.offload(coder.encode_params(params))
    assert params["final_state"].startswith("dwarf::@mem://")
    row = {"final_state": params["final_state"]}
    coder.fetch(coder.decode_rows([row]))
    assert row["final_state"] == BIG


def test_a_failing_blob_store_makes_a_transient_codec_error_without_its_message() -> None:
    blobs = MemoryBlobs()
    coder = ValueCoder(blobs=blobs, offload_above=100)
    params = {"state": BIG}
    coder.offload(coder.encode_params(params))
    blobs.fail = True
    row = {"state": params["state"]}
    coder.fetch(coder.decode_rows([row]))
    assert isinstance(row["state"], Undecodable)
    with pytest.raises(CodecError) as caught:
        parse_json(row["state"])
    assert caught.value.transient and "OSError" in str(caught.value) and "secret" not in str(caught.value)


def test_an_offloaded_value_read_without_a_blob_store_is_a_codec_error() -> None:
    coder = ValueCoder(blobs=MemoryBlobs(), offload_above=100)
    params = {"state": BIG}
    coder.offload(coder.encode_params(params))
    with pytest.raises(CodecError, match="blob store"):
        read(ValueCoder([ZlibCodec()]), params["state"])


def test_an_unusable_blob_reference_is_refused() -> None:
    class BadBlobs(MemoryBlobs):
        def put(self, key: str, data: bytes) -> str:
            return ""

    coder = ValueCoder(blobs=BadBlobs(), offload_above=1)
    with pytest.raises(CodecError, match="unusable reference"):
        coder.offload(coder.encode_params({"state": BIG}))


class Rot13:
    """A custom codec (a toy: not for real use)."""

    name = "rot"

    def encode(self, data: bytes) -> tuple[str, bytes] | None:
        return "rot.v1", bytes((b + 13) % 256 for b in data)

    def decode(self, codec_id: str, data: bytes) -> bytes:
        return bytes((b - 13) % 256 for b in data)


def test_a_custom_codec_plugs_in_and_is_checked_for_its_id() -> None:
    assert isinstance(Rot13(), Codec)
    coder = ValueCoder([Rot13()])
    text = stored(coder, '{"a":1}')
    assert text.startswith("dwarf:rot.v1:") and read(coder, text) == {"a": 1}

    class Liar(Rot13):
        def encode(self, data: bytes) -> tuple[str, bytes] | None:
            return "zlib", data

    with pytest.raises(CodecError, match="codec id"):
        stored(ValueCoder([Liar()]), '{"a":1}')


def test_a_codec_that_raises_while_decoding_is_reported_by_type_only() -> None:
    class Broken(Rot13):
        def decode(self, codec_id: str, data: bytes) -> bytes:
            raise ValueError(f"cannot decode {data!r}")

    text = stored(ValueCoder([Rot13()]), '{"ssn":"123-45-6789"}')
    with pytest.raises(CodecError) as caught:
        read(ValueCoder([Broken()]), text)
    assert "ValueError" in str(caught.value) and "123" not in str(caught.value)


def test_malformed_envelopes_are_codec_errors() -> None:
    coder = ValueCoder([ZlibCodec()])
    for text in ("dwarf:zlib", "dwarf:zlib:!!!", "dwarf:zlib:" + base64.b64encode(b"not zlib").decode()):
        with pytest.raises(CodecError):
            read(coder, text)


@pytest.mark.parametrize(
    ("keys", "current", "message"),
    [
        ({}, None, "at least one key"),
        ({"k1": b"short"}, None, "16, 24 or 32 bytes"),
        ({"bad id!": KEY1}, None, "key ids"),
        ({"k1": KEY1, "k2": KEY2}, None, "needs current"),
        ({"k1": KEY1}, "k9", "not one of the keys"),
    ],
)
def test_aes_gcm_refuses_bad_keys_without_quoting_them(
    keys: dict[str, bytes], current: str | None, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message) as caught:
        AESGCMCodec(keys, current)
    assert "short" not in str(caught.value) or message != "16, 24 or 32 bytes"


def test_aes_gcm_never_shows_its_keys() -> None:
    codec = AESGCMCodec({"k1": KEY1, "k2": KEY2}, current="k2")
    assert KEY1.hex() not in repr(codec) and repr(KEY1) not in repr(codec)
    assert codec.key_ids == ["k1", "k2"] and "k2" in repr(codec)
    assert len(AESGCMCodec.generate_key()) == 32


def test_aes_gcm_without_the_crypto_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("cryptography"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", raising=False)
    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ImportError, match=r"dwarf-workflow\[crypto\]"):
        AESGCMCodec({"k1": KEY1})


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("zlib", "is not a codec"),
        ([ZlibCodec(), ZlibCodec()], "two codecs are named 'zlib'"),
        (object(), "must be a Codec"),
    ],
)
def test_the_engine_refuses_what_is_not_a_codec(codec: Any, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        Engine(codec=codec)


def test_a_codec_needs_a_storable_name() -> None:
    class Shouty(Rot13):
        name = "ROT:13"

    with pytest.raises(BadRequestError, match="codec name"):
        Engine(codec=Shouty())


@pytest.mark.parametrize(
    ("setting", "value"), [("max_state_size", -1), ("offload_above", 0), ("blob_store", object())]
)
def test_the_engine_refuses_bad_value_settings(setting: str, value: Any) -> None:
    with pytest.raises(BadRequestError):
        Engine(**{setting: value})


async def test_value_settings_are_construction_time_only() -> None:
    engine = Engine(workers=0, dsn="sqlite://:memory:")
    engine.set_in_test("codec-settings")
    await engine.startup()
    try:
        with pytest.raises(EngineStateError):
            engine.set_codec(ZlibCodec())
        with pytest.raises(EngineStateError):
            engine.set_max_state_size(100)
    finally:
        await engine.shutdown()


def test_the_settings_read_back_as_keywords() -> None:
    codec = ZlibCodec()
    blobs = MemoryBlobs()
    engine = Engine(codec=codec, max_state_size=1000, blob_store=blobs, offload_above=500)
    settings = engine.settings
    assert settings["codec"] == (codec,) and settings["max_state_size"] == 1000
    assert settings["blob_store"] is blobs and settings["offload_above"] == 500
    assert Engine(**settings).settings == settings
    plain = Engine().settings
    assert "codec" not in plain and "max_state_size" not in plain and "blob_store" not in plain


def test_every_statement_parameter_that_may_carry_a_json_value_is_encoded() -> None:
    """A new statement writing a JSON column under a new parameter name would store plaintext: the
    parameter must join JSON_PARAMS (store/encoded.py) or be listed here as not a JSON value."""
    from dwarf.store.base import load_queries
    from dwarf.store.encoded import JSON_PARAMS

    not_json = {"state_base"}  # a step id (008_state_deltas.sql)
    json_words = ("state", "change", "append", "carry", "payload", "baggage", "result", "resume", "branches")
    found: set[str] = set()
    for dialect in ("sqlite", "postgres"):
        for name, sql in load_queries(dialect, "0").items():
            if name.startswith("reencode_"):
                continue  # Engine.reencode runs on the plain stores, with values it encoded itself
            found.update(re.findall(r"(?<!:):([a-z_]+)", sql))
    suspects = {param for param in found if any(word in param for word in json_words)}
    assert suspects - set(JSON_PARAMS) - not_json - {"branches"} == set()
