"""Document batch: one parallel branch per document, retries with backoff, totals folded by reducers.

Run it with ``python -m examples.document_batch [--dsn URL]`` (default: ``dwarf.db`` in the working
directory, or ``$DWARF_DSN``).

What it shows:

- a forEach transition: ``Analyze`` runs once per element of the state field ``documents``, each branch
  seeing its element under ``doc`` (plus ``docIndex`` and ``docCount``);
- a fan-in (``Summarize``) whose reducers fold what the branches wrote, in array order: ``ADD`` sums
  word counts and retries, ``MAX`` keeps the longest document, ``UNION`` collects distinct languages,
  ``MERGE`` builds a per-document table, ``APPEND`` builds a report;
- ``flow.retry`` with exponential backoff: the document store times out on some reads; the task asks
  to run again 50 ms, 100 ms, 200 ms later (capped at 400 ms) and gives up 1.5 seconds after its first
  attempt. A document that recovers costs a few attempts of the same step; one that never does fails
  its branch, which cancels the sibling branches and fails the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

from dwarf import END, Engine, Flow, Graph, Reducer
from dwarf.hosts.local import LocalHost
from examples.common import add_dsn_option, chosen_dsn, print_history, print_outcome

host = LocalHost(max_threads=16)


@host.workflow("documents/batch")
def batch_graph() -> Graph:
    """Collect -> Analyze (one branch per document) -> Summarize -> END."""
    graph = Graph("DocumentBatch")
    graph.add_task("Collect", "documents/collect")
    graph.add_task("Analyze", "documents/analyze")
    graph.add_task("Summarize", "documents/summarize")
    graph.add_transition_for_each("Collect", "Analyze", "documents", "doc")
    graph.add_transition("Analyze", "Summarize")
    graph.set_fan_in("Summarize")
    graph.set_reducer("totalWords", Reducer.ADD)
    graph.set_reducer("retries", Reducer.ADD)
    graph.set_reducer("longest", Reducer.MAX)
    graph.set_reducer("languages", Reducer.UNION)
    graph.set_reducer("byDocument", Reducer.MERGE)
    graph.set_reducer("report", Reducer.APPEND)
    graph.add_transition("Summarize", END)
    return graph


# --- a document store that is sometimes slow to answer ----------------------------------------------------


class StoreTimeout(Exception):
    """The document store did not answer in time; trying again later usually works."""


class DocumentStore:
    """In-memory documents; the ids in ``flaky`` time out on that many reads before they answer."""

    def __init__(self, documents: dict[str, str], flaky: dict[str, int]) -> None:
        self.documents = documents
        self.timeouts_left = dict(flaky)

    def read(self, doc_id: str) -> str:
        if self.timeouts_left.get(doc_id, 0) > 0:
            self.timeouts_left[doc_id] -= 1
            raise StoreTimeout(f"reading {doc_id} timed out")
        return self.documents[doc_id]


STORE = DocumentStore(
    {
        "memo-1": "The meeting is moved to Friday and the agenda is in the shared folder.",
        "brief-2": "Der Bericht ist fertig und die Zahlen sind in der Tabelle.",
        "note-3": "Le rapport est prêt et les chiffres sont dans le tableau de la semaine.",
        "nota-4": "El informe está listo y los números están en la tabla.",
        "memo-5": "Please review the draft before the end of the day so that it can go out.",
    },
    # memo-5 recovers after two timeouts; lost-6 never answers.
    flaky={"memo-5": 2, "lost-6": 1_000},
)

STOPWORDS = {
    "en": {"the", "and", "is", "to", "in", "of", "it", "so", "that"},
    "de": {"der", "die", "das", "und", "ist", "sind", "in"},
    "fr": {"le", "la", "les", "et", "est", "sont", "dans", "de"},
    "es": {"el", "la", "los", "y", "está", "están", "en"},
}


def guess_language(text: str) -> str:
    """The language whose common words occur most often: crude, deterministic, good enough here."""
    words = re.findall(r"\w+", text.lower())
    scores = {language: sum(word in common for word in words) for language, common in STOPWORDS.items()}
    best = max(scores, key=lambda language: scores[language])
    return best if scores[best] else "unknown"


# --- the tasks --------------------------------------------------------------------------------------------


@host.task("documents/collect")
async def collect(flow: Flow) -> None:
    flow.set("documents", sorted(set(flow.get_strs("documents"))))  # de-duplicated, in a stable order


@host.task("documents/analyze")
def analyze(flow: Flow) -> None:  # sync: real text analysis is CPU work, so it runs in a worker thread
    doc_id = flow.get_str("doc")
    try:
        text = STORE.read(doc_id)
    except StoreTimeout:
        # 50 ms, 100 ms, 200 ms, then 400 ms between attempts; no new attempt later than 1.5 s after
        # the first. The task decides what is transient: only it knows what the error means.
        if flow.retry(0.05, 2.0, 0.4, give_up_after=1.5):
            return
        raise
    words = len(re.findall(r"\w+", text))
    language = guess_language(text)
    # Every field below has a reducer, so each is this branch's contribution, not a running total.
    flow.set("totalWords", words)
    flow.set("retries", flow.attempt)
    flow.set("longest", words)
    flow.set("languages", [language])
    flow.set("byDocument", {doc_id: {"words": words, "language": language, "attempts": flow.attempt + 1}})
    flow.set("report", [f"{flow.get_int('docIndex') + 1}/{flow.get_int('docCount')} {doc_id}: {language}"])


@host.task("documents/summarize")
async def summarize(flow: Flow) -> None:
    table: dict[str, dict[str, Any]] = flow.get("byDocument", {})
    per_language: dict[str, int] = {}
    for row in table.values():
        per_language[row["language"]] = per_language.get(row["language"], 0) + 1
    flow.set("perLanguage", dict(sorted(per_language.items())))
    flow.set("averageWords", round(flow.get_int("totalWords") / max(len(table), 1), 1))


# --- the program ------------------------------------------------------------------------------------------

FIELDS = ["totalWords", "averageWords", "longest", "languages", "perLanguage", "retries", "report"]


async def main(dsn: str) -> int:
    """Analyze a good batch and one with a document that never loads; print and check both outcomes."""
    good_batch = ["memo-1", "brief-2", "note-3", "nota-4", "memo-5"]
    async with Engine(host=host, dsn=dsn) as engine:
        # Starting values for reducer fields are where the fold begins; they are optional (a missing
        # field starts empty) but make the first report readable.
        key, outcome = await engine.run(
            "documents/batch", {"documents": good_batch, "totalWords": 0, "retries": 0}, timeout=30
        )
        print_outcome("Batch of five", key, outcome, FIELDS)
        await print_history(engine, key)
        good = outcome.status == "completed" and outcome.state["retries"] == 2

        key, outcome = await engine.run("documents/batch", {"documents": ["memo-1", "lost-6"]}, timeout=30)
        print_outcome("Batch with a lost document", key, outcome, FIELDS)
        await print_history(engine, key)
        gave_up = outcome.status == "failed" and "lost-6" in outcome.error
    return 0 if good and gave_up else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_dsn_option(parser)
    sys.exit(asyncio.run(main(chosen_dsn(parser.parse_args().dsn))))
