// Reloads the pages of running flows (diagrams.mjs draws the history diagram).
"use strict";

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

document.addEventListener("DOMContentLoaded", scheduleRefresh);
