"""The optional host methods (``signal_peers``, ``flow_stopped``, ``engine_started``, ``engine_stopped``,
``serves``): each is a small runtime-checkable protocol, and ``Engine.set_host`` resolves them once into
``HostHooks``."""

from __future__ import annotations

from typing import Any

import pytest

from dwarf import BadRequestError, Engine, Flow, Graph
from dwarf.engine import TestProxy
from dwarf.engine.host import (
    EngineStartedHook,
    EngineStoppedHook,
    FlowStoppedHook,
    Host,
    HostHooks,
    ServesHook,
    SignalPeersHook,
)
from dwarf.hosts.local import LocalHost

HOOKS = ("signal_peers", "flow_stopped", "engine_started", "engine_stopped", "serves")


class BareHost:
    """A host with the two required methods only."""

    async def load_graph(self, workflow_url: str) -> Graph | None:
        return None

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        pass


def test_a_host_with_only_the_required_methods_has_no_hooks() -> None:
    hooks = HostHooks.of(BareHost())
    assert [getattr(hooks, name) for name in HOOKS] == [None] * len(HOOKS)


@pytest.mark.parametrize("host", [LocalHost(), TestProxy()], ids=["LocalHost", "TestProxy"])
def test_the_in_process_hosts_have_all_the_hooks_bound_to_them(host: Any) -> None:
    assert isinstance(host, Host)
    for protocol in (SignalPeersHook, FlowStoppedHook, EngineStartedHook, EngineStoppedHook, ServesHook):
        assert isinstance(host, protocol)
    hooks = HostHooks.of(host)
    assert all(getattr(hooks, name).__self__ is host for name in HOOKS)


def test_a_hook_set_to_none_counts_as_absent() -> None:
    class Quiet(LocalHost):
        signal_peers = None  # type: ignore[assignment]

    hooks = HostHooks.of(Quiet())
    assert hooks.signal_peers is None
    assert hooks.flow_stopped is not None


@pytest.mark.parametrize("name", HOOKS)
def test_set_host_refuses_a_hook_that_is_not_callable_and_keeps_the_host_it_had(name: str) -> None:
    first = BareHost()
    engine = Engine(host=first)
    odd = BareHost()
    setattr(odd, name, "not callable")
    with pytest.raises(BadRequestError, match=name):
        engine.set_host(odd)
    assert engine.settings["host"] is first


class _NullRelay:
    async def start(self, deliver: Any) -> None:
        pass

    async def publish(self, op: str, payload: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


def test_relay_host_forwards_serves_and_http_host_refuses_other_schemes() -> None:
    from dwarf.hosts.relay import RelayHost

    local = LocalHost()
    local.add_task("known", lambda flow: None)
    wrapped = RelayHost(local, _NullRelay())
    assert (wrapped.serves("known"), wrapped.serves("unknown")) == (True, False)
    assert HostHooks.of(wrapped).serves is not None
    assert RelayHost(BareHost(), _NullRelay()).serves("anything") is None

    pytest.importorskip("httpx")
    from dwarf.hosts.http import HTTPHost

    http = HTTPHost()
    assert http.serves("https://tasks.example/charge") is None  # known only when it runs
    assert http.serves("tasks/charge") is False
