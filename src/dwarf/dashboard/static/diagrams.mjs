// Draws the flow page's history diagram with the Mermaid shipped beside this file (its ES-module build,
// which loads only the chunks a flowchart needs). Module scripts run once the page is parsed.
import mermaid from "./mermaid/mermaid.esm.min.mjs";

const nodes = document.querySelectorAll("pre.mermaid");
if (nodes.length) {
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
