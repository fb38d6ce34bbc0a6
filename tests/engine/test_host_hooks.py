"""The optional host methods (``signal_peers``, ``flow_stopped``, ``engine_started``, ``engine_stopped``):
each is a small runtime-checkable protocol, and ``Engine.set_host`` resolves them once into ``HostHooks``."""

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
    SignalPeersHook,
)
from dwarf.hosts.local import LocalHost

HOOKS = ("signal_peers", "flow_stopped", "engine_started", "engine_stopped")


class BareHost:
    """A host with the two required methods only."""

    async def load_graph(self, workflow_url: str) -> Graph | None:
        return None

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        pass


def test_a_host_with_only_the_required_methods_has_no_hooks() -> None:
    hooks = HostHooks.of(BareHost())
    assert [getattr(hooks, name) for name in HOOKS] == [None, None, None, None]


@pytest.mark.parametrize("host", [LocalHost(), TestProxy()], ids=["LocalHost", "TestProxy"])
def test_the_in_process_hosts_have_all_four_hooks_bound_to_them(host: Any) -> None:
    assert isinstance(host, Host)
    for protocol in (SignalPeersHook, FlowStoppedHook, EngineStartedHook, EngineStoppedHook):
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
