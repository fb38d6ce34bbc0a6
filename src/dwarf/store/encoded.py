"""Values at rest through codecs: the stored form of JSON values, and a store that writes and reads it.

An engine given codecs, a size guard or a blob store (docs/codecs.md) wraps each shard's store in an
``EncodedStore``. Every statement parameter that carries a JSON value (``JSON_PARAMS``) is checked
against the size guard and encoded on its way in; every JSON column of the rows that come back
(``JSON_COLUMNS``) is decoded on its way out. The engine above keeps reading and writing plain JSON text,
and an engine without any of those settings has no wrapper at all: its path is the plain store's.

The stored form of an encoded value is text that no JSON value starts with::

    dwarf:<codec id>[+<codec id>...]:<base64 of the encoded bytes>
    dwarf:[<codec id>+...]:@<blob reference>

The codec ids are listed in the order they were applied (``zlib+aesgcm.k2``: compressed, then encrypted
with key k2); a value no codec applied to stays plain JSON, so plaintext rows, rows of old keys and rows
of the current key read side by side. The SQL never looks inside these columns (it copies them, and
compares ``state`` with '', which is never encoded), so an encoded column is as good as a plain one.

A value that cannot be decoded is not an error where the rows are read: it stays in the row as an
``Undecodable`` string, and parsing it raises the CodecError it carries. A claim that returns one
unreadable step therefore still hands out the others, and the unreadable one is left to a replica that
holds the key (see ``rows.parse_failure``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dwarf.codecs import KEY_ID_PATTERN, NAME_PATTERN, BlobStore, Codec
from dwarf.errors import CodecError, StateTooLargeError
from dwarf.store.base import Row, Store, Tx, TxFunction
from dwarf.store.statements import StatementName

__all__ = [
    "JSON_COLUMNS",
    "JSON_PARAMS",
    "PREFIX",
    "EncodedStore",
    "Undecodable",
    "ValueCoder",
    "encoded_stores",
    "encoded_value_error",
]

T = TypeVar("T")

PREFIX = "dwarf:"
"""How every encoded value starts (no JSON text starts with a letter d)."""

JSON_PARAMS = (
    "state",
    "changes",
    "appends",
    "carry",
    "next_carry",
    "interrupt_payload",
    "final_state",
    "resume_data",
    "subgraph_result",
    "baggage",
)
"""The statement parameters that carry JSON values (the flow's graph is the program, not data: plain)."""

JSON_COLUMNS = (
    "state",
    "changes",
    "appends",
    "carry",
    "interrupt_payload",
    "final_state",
    "resume_data",
    "subgraph_result",
    "baggage",
    "child_state",
)
"""The result columns that hold JSON values (``child_state`` is wedged_subgraph_parks' final_state)."""

_PLAIN = frozenset({"", "{}", "null"})
"""Never encoded: '' is a state stored as a reference (008_state_deltas.sql, compared in SQL), and the
others carry nothing to hide; leaving them plain keeps most columns of most rows as they are."""

_WHAT = {
    "state": "a step's input state",
    "changes": "a step's changes",
    "appends": "a step's appended items",
    "carry": "a branch's changes since its fan-out",
    "next_carry": "a branch's changes since its fan-out",
    "interrupt_payload": "an interrupt payload",
    "final_state": "a flow's final state",
    "resume_data": "resume data",
    "subgraph_result": "a child flow's final state",
    "baggage": "the baggage",
}

MAX_REF_LENGTH = 1024


class Undecodable(str):
    """A stored value this engine cannot decode, kept as its stored text with the reason; parsing it
    raises ``error`` (see ``rows.parse_failure``)."""

    error: CodecError

    def __new__(cls, text: str, error: CodecError) -> Undecodable:
        value = super().__new__(cls, text)
        value.error = error
        return value


def encoded_value_error(text: str) -> CodecError | None:
    """Why a column's text is not JSON, when it is an encoded value (None when it is not one): the
    reason decoding failed, or, for an engine without codecs, which codecs wrote it."""
    error = getattr(text, "error", None)
    if isinstance(error, CodecError):
        return error
    if not text.startswith(PREFIX):
        return None
    chain, _, payload = text[len(PREFIX) :].partition(":")
    what = f"codec {chain!r}" if chain else "no codec"
    where = " and offloaded to a blob store" if payload.startswith("@") else ""
    return CodecError(
        f"a stored value was encoded with {what}{where}, and this engine has no codecs set: configure it "
        "with the codecs (and keys) that wrote the database (docs/codecs.md)",
        codec_id=chain,
    )


@dataclass
class _Offload:
    """An encoded value that goes to the blob store; ``target`` receives its stored text."""

    chain: str
    data: bytes
    target: Callable[[str], None]


@dataclass
class _Fetch:
    """A stored value whose bytes are in the blob store."""

    text: str
    chain: str
    ref: str
    row: Row
    column: str


class ValueCoder:
    """Turns JSON texts into their stored form and back, for one engine's settings.

    ``codecs`` apply in order when writing; ``max_size`` (0: none) is the size guard in characters of
    JSON text; values whose encoded bytes reach ``offload_above`` go to ``blobs`` when it is set.
    """

    def __init__(
        self,
        codecs: Sequence[Codec] = (),
        *,
        max_size: int = 0,
        blobs: BlobStore | None = None,
        offload_above: int = 0,
    ) -> None:
        self.codecs = tuple(codecs)
        self.max_size = max_size
        self.blobs = blobs
        self.offload_above = offload_above
        self._by_name = {codec.name: codec for codec in self.codecs}
        self._encodes = bool(self.codecs) or blobs is not None
        self._checked_ids: set[str] = set()

    # --- writing ---

    def encode(self, text: str, what: str, target: Callable[[str], None]) -> _Offload | None:
        """Check ``text`` against the size guard and hand its stored form to ``target``; a value bound
        for the blob store is returned instead, for ``offload`` to finish."""
        if self.max_size and len(text) > self.max_size:
            raise StateTooLargeError(
                f"too large to store: {_WHAT.get(what, what)} takes {len(text):,} characters of JSON, more "
                f"than max_state_size ({self.max_size:,})",
                what=what,
                size=len(text),
                limit=self.max_size,
            )
        if not self._encodes:
            return None
        data = text.encode("utf-8")
        ids = []
        for codec in self.codecs:
            encoded = codec.encode(data)
            if encoded is None:
                continue
            codec_id, data = encoded
            if codec_id not in self._checked_ids:
                self._check_id(codec, codec_id)
            ids.append(codec_id)
        chain = "+".join(ids)
        if self.blobs is not None and len(data) >= self.offload_above:
            return _Offload(chain, data, target)
        if ids:
            target(f"{PREFIX}{chain}:{base64.b64encode(data).decode('ascii')}")
        return None

    def _check_id(self, codec: Codec, codec_id: Any) -> None:
        name, dot, key_id = codec_id.partition(".") if isinstance(codec_id, str) else ("", "", "")
        if (
            name != codec.name
            or not NAME_PATTERN.fullmatch(name)
            or (dot and not KEY_ID_PATTERN.fullmatch(key_id))
        ):
            raise CodecError(
                f"codec {codec.name!r} returned the codec id {codec_id!r}: it must be its name, or its name, "
                "a dot and a key id",
                codec_id=str(codec.name),
            )
        self._checked_ids.add(codec_id)

    def encode_params(self, params: dict[str, Any]) -> list[_Offload]:
        """Encode the JSON parameters of a statement in place; return those bound for the blob store."""
        pending: list[_Offload] = []
        for name in JSON_PARAMS:
            text = params.get(name)
            if not isinstance(text, str) or text in _PLAIN:
                continue
            offload = self.encode(text, name, _Put(params, name))
            if offload is not None:
                pending.append(offload)
        branches = params.get("branches")
        if isinstance(branches, str):
            pending.extend(self._encode_branches(params, branches))
        return pending

    def _encode_branches(self, params: dict[str, Any], text: str) -> list[_Offload]:
        """insert_branch_steps' JSON array of branches, each with its state as JSON text: each state is
        encoded, and its plain size goes along as ``bytes`` (the row's snapshot_bytes)."""
        branches = json.loads(text)
        dump = _DumpBranches(params, branches)
        pending: list[_Offload] = []
        for branch in branches:
            state = branch["state"]
            branch["bytes"] = len(state)
            if state in _PLAIN:
                continue
            offload = self.encode(state, "state", _Put(branch, "state"))
            if offload is not None:
                # The array is written again once the offloaded state has its reference.
                offload.target = _Put(branch, "state", then=dump)
                pending.append(offload)
        dump()
        return pending

    def offload(self, pending: Sequence[_Offload]) -> None:
        """Put the values of ``pending`` into the blob store and hand their references to their targets
        (blocking: the caller runs it where blocking is allowed)."""
        blobs = self.blobs
        assert blobs is not None
        for item in pending:
            key = hashlib.sha256(item.data).hexdigest()
            ref = blobs.put(key, item.data)
            if not isinstance(ref, str) or not ref or len(ref) > MAX_REF_LENGTH or "\x00" in ref:
                raise CodecError(
                    f"the blob store returned an unusable reference for a value of codec {item.chain!r}: "
                    f"it must be text of 1 to {MAX_REF_LENGTH} characters without NUL",
                    codec_id=item.chain,
                )
            item.target(f"{PREFIX}{item.chain}:@{ref}")

    # --- reading ---

    def decode_rows(self, rows: Sequence[Row]) -> list[_Fetch]:
        """Decode the JSON columns of ``rows`` in place; return those whose bytes are in the blob store."""
        pending: list[_Fetch] = []
        for row in rows:
            for column in JSON_COLUMNS:
                text = row.get(column)
                if text is None or text.__class__ is not str or not text.startswith(PREFIX):
                    continue
                chain, sep, payload = text[len(PREFIX) :].partition(":")
                if payload.startswith("@"):
                    pending.append(_Fetch(text, chain, payload[1:], row, column))
                    continue
                try:
                    data = base64.b64decode(payload, validate=True) if sep else None
                except binascii.Error:
                    data = None
                if data is None:
                    row[column] = Undecodable(text, CodecError("a stored value is malformed", codec_id=chain))
                    continue
                row[column] = self._unwrap(text, chain, data)
        return pending

    def fetch(self, pending: Sequence[_Fetch]) -> None:
        """Read the bytes of ``pending`` from the blob store and decode them into their rows (blocking)."""
        for item in pending:
            if self.blobs is None:
                missing = CodecError(
                    f"a stored value of codec {item.chain!r} was offloaded to a blob store, and this engine "
                    "has none set",
                    codec_id=item.chain,
                )
                item.row[item.column] = Undecodable(item.text, missing)
                continue
            try:
                data = self.blobs.get(item.ref)
            except Exception as failure:
                unavailable = CodecError(
                    f"the blob store failed to return an offloaded value: {type(failure).__name__}",
                    codec_id=item.chain,
                    transient=True,
                )
                item.row[item.column] = Undecodable(item.text, unavailable)
                continue
            item.row[item.column] = self._unwrap(item.text, item.chain, data)

    def _unwrap(self, text: str, chain: str, data: bytes) -> str:
        """The JSON text of a stored value's bytes, its codecs undone in reverse order."""
        for codec_id in reversed(chain.split("+")) if chain else ():
            codec = self._by_name.get(codec_id.partition(".")[0])
            if codec is None:
                names = ", ".join(repr(name) for name in self._by_name) or "none"
                unknown = CodecError(
                    f"a stored value was encoded with codec {codec_id!r}, which this engine does not have "
                    f"(its codecs: {names})",
                    codec_id=codec_id,
                )
                return Undecodable(text, unknown)
            try:
                data = codec.decode(codec_id, data)
            except CodecError as refused:
                return Undecodable(text, refused)
            except Exception as failure:
                # Only the exception's type: its text may quote the value.
                broken = CodecError(
                    f"codec {codec_id!r} failed to decode a stored value: {type(failure).__name__}",
                    codec_id=codec_id,
                )
                return Undecodable(text, broken)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            garbled = CodecError(f"a value decoded with codec {chain!r} is not UTF-8 text", codec_id=chain)
            return Undecodable(text, garbled)


class _Put:
    """Where an encoded value goes: an entry of a statement's parameters (or of a branch), after which
    ``then`` runs."""

    __slots__ = ("key", "target", "then")

    def __init__(self, target: dict[str, Any], key: str, then: Callable[[], None] | None = None) -> None:
        self.target = target
        self.key = key
        self.then = then

    def __call__(self, stored: str) -> None:
        self.target[self.key] = stored
        if self.then is not None:
            self.then()


class _DumpBranches:
    """Writes insert_branch_steps' array of branches back into its parameter."""

    __slots__ = ("branches", "params")

    def __init__(self, params: dict[str, Any], branches: list[dict[str, Any]]) -> None:
        self.params = params
        self.branches = branches

    def __call__(self) -> None:
        self.params["branches"] = json.dumps(self.branches, separators=(",", ":"), ensure_ascii=False)


class _EncodedTx(Tx):
    """A transaction whose JSON parameters are encoded and whose JSON columns are decoded.

    ``blocking`` says the unit runs on a thread of its own (SQLite), where the blob store is called
    directly; elsewhere (PostgreSQL) its calls go to a worker thread, off the event loop.
    """

    def __init__(self, inner: Tx, coder: ValueCoder, blocking: bool) -> None:
        self._inner = inner
        self._coder = coder
        self._blocking = blocking

    async def _prepare(self, params: dict[str, Any]) -> None:
        pending = self._coder.encode_params(params)
        if pending:
            if self._blocking:
                self._coder.offload(pending)
            else:
                await asyncio.to_thread(self._coder.offload, pending)

    async def _finish(self, query: StatementName, rows: list[Row]) -> list[Row]:
        if query == "finish_and_continue":
            # The successor's row comes back to run inline, with the state its worker already holds:
            # its stored state is never read (StepRow.of is given the state), so it is not decoded.
            for row in rows:
                row["state"] = None
        pending = self._coder.decode_rows(rows)
        if pending:
            if self._blocking:
                self._coder.fetch(pending)
            else:
                await asyncio.to_thread(self._coder.fetch, pending)
        return rows

    async def fetch_all(self, query: StatementName, **params: Any) -> list[Row]:
        await self._prepare(params)
        return await self._finish(query, await self._inner.fetch_all(query, **params))

    async def execute(self, query: StatementName, **params: Any) -> int:
        await self._prepare(params)
        return await self._inner.execute(query, **params)


class EncodedStore(Store):
    """One shard's store seen through a ``ValueCoder`` (the engine's own view: stores shared by engines
    of one process stay plain underneath). Everything but the values is the inner store's."""

    def __init__(self, inner: Store, coder: ValueCoder) -> None:
        self.inner = inner
        self.coder = coder
        self.dialect = inner.dialect
        self.shard = inner.shard
        self._blocking = not inner.units_may_suspend

    # The health flag, the outage state and the logger are the inner store's, shared with its other users.
    @property
    def healthy(self) -> bool:
        return self.inner.healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.inner.healthy = value

    @property
    def log(self) -> Any:
        return self.inner.log

    @log.setter
    def log(self, value: Any) -> None:
        self.inner.log = value

    def __getattr__(self, name: str) -> Any:
        # Dialect extras (pool_stats, path) are the inner store's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def description(self) -> str:
        return self.inner.description

    async def open(self, *, migrate: bool = True) -> None:
        await self.inner.open(migrate=migrate)

    async def close(self) -> None:
        await self.inner.close()

    async def resize(self, pool_size: int) -> None:
        await self.inner.resize(pool_size)

    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        coder, blocking = self.coder, self._blocking
        return await self.inner.run(lambda tx: work(_EncodedTx(tx, coder, blocking)), write=write)

    async def read(self, query: StatementName, **params: Any) -> list[Row]:
        # Outside any unit of work: the blob store is called on a worker thread whatever the dialect.
        tx = _EncodedTx(_Direct(self.inner, write=False), self.coder, blocking=False)
        return await tx.fetch_all(query, **params)

    async def write(self, query: StatementName, **params: Any) -> list[Row]:
        tx = _EncodedTx(_Direct(self.inner, write=True), self.coder, blocking=False)
        return await tx.fetch_all(query, **params)

    def store_error(self, cause: BaseException, *, transient: bool, what: str = "") -> Any:
        return self.inner.store_error(cause, transient=transient, what=what)

    def is_outage(self, cause: BaseException) -> bool:
        return self.inner.is_outage(cause)


class _Direct(Tx):
    """The inner store's single-statement read or write (its own fast path), as a Tx."""

    def __init__(self, store: Store, *, write: bool) -> None:
        self._store = store
        self._write = write

    async def fetch_all(self, query: StatementName, **params: Any) -> list[Row]:
        if self._write:
            return await self._store.write(query, **params)
        return await self._store.read(query, **params)

    async def execute(self, query: StatementName, **params: Any) -> int:
        raise NotImplementedError("single statements only fetch rows")


def encoded_stores(stores: Sequence[Store], config: Any) -> list[Store]:
    """Each shard's store seen through one ``ValueCoder`` made from an engine's settings (EngineConfig)."""
    coder = ValueCoder(
        config.codec,
        max_size=config.max_state_size,
        blobs=config.blob_store,
        offload_above=config.offload_above,
    )
    return [EncodedStore(store, coder) for store in stores]
