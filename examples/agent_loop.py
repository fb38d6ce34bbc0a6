"""An agent loop: plan, act, observe, repeat; with a step budget and a human to ask when stuck.

Run it with ``python -m examples.agent_loop [--dsn URL]`` (default: ``dwarf.db`` in the working
directory, or ``$DWARF_DSN``).

What it shows:

- a loop built from goto transitions: ``Plan`` asks a (fake, deterministic) language model what to do
  next and jumps with ``flow.goto`` to ``Act`` (use a tool), ``AskHuman``, ``Answer`` or
  ``OutOfBudget``; ``Observe`` records what the tool returned and jumps back to ``Plan``;
- a step budget kept in the state (``stepsLeft``): every turn of ``Plan`` spends one, and an agent that
  runs out stops cleanly, keeping its notes, instead of looping for ever;
- ``flow.interrupt`` as "ask a human": when the tool finds nothing, the agent parks the flow with its
  question; the answer (resume data) becomes a note and the loop carries on. Here the program plays
  the human; in an application the answer would come from a UI or the ``dwarf resume`` command.

Every turn is a durable step, so a crash in the middle of a long agent run resumes where it stopped,
and the history (printed as Mermaid) is the agent's trace.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from dwarf import END, Engine, Flow, Graph, Status
from dwarf.hosts.local import LocalHost
from examples.common import add_dsn_option, chosen_dsn, print_history, print_outcome

WORKFLOW = "agents/research"

host = LocalHost(max_threads=4)


@host.workflow(WORKFLOW)
def agent_graph() -> Graph:
    """Plan -goto-> Act -> Observe -goto-> Plan, Plan -goto-> AskHuman -goto-> Plan, and two exits."""
    graph = Graph("ResearchAgent")
    graph.add_task("Plan", "agent/plan")
    graph.add_task("Act", "agent/act")
    graph.add_task("Observe", "agent/observe")
    graph.add_task("AskHuman", "agent/ask-human")
    graph.add_task("Answer", "agent/answer")
    graph.add_task("OutOfBudget", "agent/out-of-budget")
    for target in ("Act", "AskHuman", "Answer", "OutOfBudget"):
        graph.add_transition_goto("Plan", target)
    graph.add_transition("Act", "Observe")
    graph.add_transition_goto("Observe", "Plan")
    graph.add_transition_goto("AskHuman", "Plan")
    graph.add_transition("Answer", END)
    graph.add_transition("OutOfBudget", END)
    return graph


# --- the "model" and the tool -------------------------------------------------------------------------------

# For each goal: the facts the model wants, in order, as (a phrase that shows the fact is known, the
# search query that should find it). A real model would improvise; this one follows its plan.
PLANS: dict[str, list[tuple[str, str]]] = {
    "Which city is the capital of the country with the highest mountain?": [
        ("Everest", "highest mountain"),
        ("Nepal", "where is Mount Everest"),
        ("Kathmandu", "capital of Nepal"),
    ],
    "Who looks after the billing service?": [
        ("maintained by", "billing service owner"),
    ],
}

SEARCH_INDEX = {
    "highest mountain": "Mount Everest is the highest mountain above sea level.",
    "where is Mount Everest": "Mount Everest stands on the border of Nepal and China.",
    "capital of Nepal": "Kathmandu is the capital of Nepal.",
}


def fake_model(goal: str, notes: list[str]) -> dict[str, str]:
    """Stands in for a model call: the same goal and notes always give the same decision."""
    known = " ".join(notes)
    for fact, query in PLANS.get(goal, []):
        if fact in known:
            continue
        if f"nothing found for {query!r}" in known:
            return {"action": "ask_human", "input": f"I could not find out about {query!r}. Do you know?"}
        return {"action": "search", "input": query}
    return {"action": "answer", "input": notes[-1] if notes else "I do not know."}


def search(query: str) -> str:
    """The agent's only tool."""
    return SEARCH_INDEX.get(query, f"nothing found for {query!r}")


# --- the tasks ----------------------------------------------------------------------------------------------


@host.task("agent/plan")
async def plan(flow: Flow) -> None:
    steps_left = flow.get_int("stepsLeft")
    if steps_left <= 0:
        flow.goto("OutOfBudget")
        return
    flow.set("stepsLeft", steps_left - 1)
    decision = fake_model(flow.get_str("goal"), flow.get_strs("notes"))
    flow.set("decision", decision)
    flow.set("trace", [*flow.get_strs("trace"), f"{decision['action']}: {decision['input']}"])
    flow.goto({"search": "Act", "ask_human": "AskHuman", "answer": "Answer"}[decision["action"]])


@host.task("agent/act")
async def act(flow: Flow) -> None:
    decision: dict[str, str] = flow.get("decision", {})
    flow.set("observation", search(decision["input"]))


@host.task("agent/observe")
async def observe(flow: Flow) -> None:
    flow.set("notes", [*flow.get_strs("notes"), flow.get_str("observation")])
    flow.delete("observation")
    flow.goto("Plan")


@host.task("agent/ask-human")
async def ask_human(flow: Flow) -> None:
    decision: dict[str, str] = flow.get("decision", {})
    reply = flow.interrupt({"question": decision["input"], "goal": flow.get_str("goal")})
    flow.set("notes", [*flow.get_strs("notes"), f"a human said: {reply.get('hint', '')}"])
    flow.goto("Plan")


@host.task("agent/answer")
async def answer(flow: Flow) -> None:
    decision: dict[str, str] = flow.get("decision", {})
    flow.set("answer", decision["input"])
    flow.set("stoppedBecause", "goal reached")


@host.task("agent/out-of-budget")
async def out_of_budget(flow: Flow) -> None:
    flow.set("answer", "")
    flow.set("stoppedBecause", "step budget used up")


# --- the program --------------------------------------------------------------------------------------------

HUMAN_HINT = {"hint": "the billing service is maintained by the payments team (ask #payments)"}
FIELDS = ["answer", "stoppedBecause", "stepsLeft", "trace"]


async def run_agent(engine: Engine, goal: str, budget: int) -> tuple[str, dict[str, Any], Status]:
    """Run one agent to its end, answering its questions for help with HUMAN_HINT."""
    key, outcome = await engine.run(WORKFLOW, {"goal": goal, "stepsLeft": budget, "notes": []}, timeout=30)
    while outcome.status == Status.INTERRUPTED:
        print(f"The agent asks: {outcome.interrupt_payload['question']}")
        print(f"  the human answers: {HUMAN_HINT['hint']}")
        await engine.resume(key, HUMAN_HINT)
        outcome = await engine.wait(key, timeout=30)
    print_outcome(f"Goal {goal!r} with a budget of {budget}", key, outcome, FIELDS)
    await print_history(engine, key)
    return key, outcome.state, outcome.status


async def main(dsn: str) -> int:
    """Three agents: one reaches its goal, one needs a human, one runs out of budget."""
    capital, billing = PLANS
    expected = [
        (capital, 8, "Kathmandu is the capital of Nepal.", "goal reached"),
        (billing, 8, f"a human said: {HUMAN_HINT['hint']}", "goal reached"),
        (capital, 2, "", "step budget used up"),
    ]
    surprises = 0
    async with Engine(host=host, dsn=dsn) as engine:
        for goal, budget, want_answer, want_reason in expected:
            _, state, status = await run_agent(engine, goal, budget)
            got = (status, state.get("answer"), state.get("stoppedBecause"))
            if got != (Status.COMPLETED, want_answer, want_reason):
                print(f"  !! expected an answer {want_answer!r} because {want_reason}")
                surprises += 1
    return 1 if surprises else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_dsn_option(parser)
    sys.exit(asyncio.run(main(chosen_dsn(parser.parse_args().dsn))))
