// The dashboard's only script: draws the history diagram with Mermaid and reloads pages of running flows.
"use strict";

function drawDiagrams() {
  const nodes = document.querySelectorAll("pre.mermaid");
  if (!nodes.length || typeof mermaid === "undefined") return;
  // "strict" keeps any HTML in labels inert; the server escapes labels as well.
  mermaid.initialize({
    startOnLoad: false,
    securityLevel: "strict",
    theme: "neutral",
    maxTextSize: 500000,
    maxEdges: 5000,
    flowchart: { useMaxWidth: true },
  });
  mermaid.run({ nodes: nodes }).catch(function (error) {
    const note = document.createElement("p");
    note.className = "problem";
    note.textContent = "The diagram could not be drawn: " + (error && error.message ? error.message : error);
    nodes[0].parentNode.appendChild(note);
  });
}

// A running flow's page reloads itself every few seconds, unless the user is typing into one of its forms.
function scheduleRefresh() {
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  let edited = false;
  document.addEventListener("input", function () { edited = true; });
  setInterval(function () {
    const active = document.activeElement;
    const typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT");
    if (!edited && !typing) window.location.reload();
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  drawDiagrams();
  scheduleRefresh();
});
