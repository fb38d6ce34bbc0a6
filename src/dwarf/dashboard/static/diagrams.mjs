// Draws the flow page's history diagram with the Mermaid shipped beside this file (its ES-module build,
// which loads only the chunks a flowchart needs), then lets the reader pan (drag) and zoom (wheel, the
// +/- buttons) it, and open a fan-out group by clicking its box. Module scripts run once the page is
// parsed. The time the drawing took is left on the diagram as data-render-ms, and the time since the
// navigation began as data-ready-at (the browser tests read them).
import mermaid from "./mermaid/mermaid.esm.min.mjs";

const ZOOM_STEP = 1.25;
const MIN_SCALE = 0.05;
const MAX_SCALE = 20;

// Pan and zoom by moving the SVG's viewBox: the drawing stays vector-sharp at any scale.
function panAndZoom(container, svg) {
  const base = svg.viewBox.baseVal;
  if (!base || !base.width || !base.height) return;
  const home = { x: base.x, y: base.y, width: base.width, height: base.height };
  let view = { ...home };
  // As tall as the drawing (up to 1.5 times its natural size, as it fits the width), within bounds: a
  // short history takes little room.
  const width = container.clientWidth || home.width;
  const natural = home.height * Math.min(1.5, width / home.width);
  container.style.height = Math.round(Math.min(Math.max(natural + 24, 160), window.innerHeight * 0.7, 640)) + "px";
  container.classList.add("pannable");
  svg.removeAttribute("style");
  svg.setAttribute("width", "100%");
  svg.setAttribute("height", "100%");
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");

  function apply() {
    svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.width} ${view.height}`);
    container.dataset.scale = (home.width / view.width).toFixed(3);
  }

  // Diagram units per screen pixel (the "meet" fit uses the tighter of the two axes).
  function unitsPerPixel() {
    const box = svg.getBoundingClientRect();
    return Math.max(view.width / Math.max(box.width, 1), view.height / Math.max(box.height, 1));
  }

  function zoom(factor, clientX, clientY) {
    const scale = home.width / (view.width / factor);
    if (scale < MIN_SCALE || scale > MAX_SCALE) return;
    const box = svg.getBoundingClientRect();
    const perPixel = unitsPerPixel();
    // The diagram point under the cursor (or the centre) stays where it is.
    const cx = clientX === undefined ? box.left + box.width / 2 : clientX;
    const cy = clientY === undefined ? box.top + box.height / 2 : clientY;
    const px = view.x + view.width / 2 + (cx - box.left - box.width / 2) * perPixel;
    const py = view.y + view.height / 2 + (cy - box.top - box.height / 2) * perPixel;
    view = {
      x: px - (px - view.x) / factor,
      y: py - (py - view.y) / factor,
      width: view.width / factor,
      height: view.height / factor,
    };
    apply();
  }

  container.addEventListener("wheel", function (event) {
    event.preventDefault();
    zoom(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, event.clientX, event.clientY);
  }, { passive: false });

  let drag = null;
  container.addEventListener("pointerdown", function (event) {
    if (event.button !== 0 || event.target.closest(".zoom")) return;
    drag = { x: event.clientX, y: event.clientY, view: { ...view }, perPixel: unitsPerPixel(), moved: false };
  });
  container.addEventListener("pointermove", function (event) {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) {
      // Captured only once it is a drag, so that a plain click still reaches the box under it.
      drag.moved = true;
      container.setPointerCapture(event.pointerId);
      container.classList.add("dragging");
    }
    view = { ...drag.view, x: drag.view.x - dx * drag.perPixel, y: drag.view.y - dy * drag.perPixel };
    apply();
  });
  function endDrag(event) {
    if (!drag) return;
    container.dataset.dragged = drag.moved ? "1" : "";
    drag = null;
    container.classList.remove("dragging");
    if (container.hasPointerCapture(event.pointerId)) container.releasePointerCapture(event.pointerId);
  }
  container.addEventListener("pointerup", endDrag);
  container.addEventListener("pointercancel", endDrag);

  for (const button of container.querySelectorAll(".zoom button")) {
    button.addEventListener("click", function () {
      const action = button.dataset.zoom;
      if (action === "in") zoom(ZOOM_STEP);
      else if (action === "out") zoom(1 / ZOOM_STEP);
      else { view = { ...home }; apply(); }
    });
  }
  apply();
}

// A fan-out group's box opens the group: the page lists each group with the link that does it.
function groupClicks(container, svg) {
  const links = new Map();
  for (const link of document.querySelectorAll("a.group-link[data-node]")) links.set(link.dataset.node, link);
  if (!links.size) return;
  for (const node of svg.querySelectorAll("g.node")) {
    // Mermaid names a node's element "<diagram id>-flowchart-<our id>-<counter>".
    const match = /flowchart-(.+)-\d+$/.exec(node.id || "");
    const link = match && links.get(match[1]);
    if (!link) continue;
    node.classList.add("group-node");
    node.setAttribute("role", "link");
    node.setAttribute("tabindex", "0");
    node.setAttribute("aria-label", link.textContent);
    node.addEventListener("click", function () {
      if (container.dataset.dragged !== "1") window.location.assign(link.href);
    });
    node.addEventListener("keydown", function (event) {
      if (event.key === "Enter") window.location.assign(link.href);
    });
  }
}

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
  const started = performance.now();
  mermaid.run({ nodes: nodes }).then(function () {
    for (const pre of nodes) {
      const container = pre.closest(".diagram");
      const svg = pre.querySelector("svg");
      if (!container || !svg) continue;
      panAndZoom(container, svg);
      groupClicks(container, svg);
      container.dataset.renderMs = String(Math.round(performance.now() - started));
      container.dataset.readyAt = String(Math.round(performance.now()));  // ms since the navigation began
      container.dataset.ready = "1";
    }
  }).catch(function (error) {
    const note = document.createElement("p");
    note.className = "problem";
    note.textContent = "The diagram could not be drawn: " + (error && error.message ? error.message : error);
    nodes[0].parentNode.appendChild(note);
  });
}
