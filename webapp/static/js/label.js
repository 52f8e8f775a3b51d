// Keyboard flow for the labeling page: one key, one decision, next cell.
//
// A cell takes keys only once htmx has processed it (data-ready), and stops
// taking them the moment one is used: a fast reader can never label the next
// cell with a key meant for this one, nor fall through to a plain form submit.
(function () {
  "use strict";
  let shownAt = performance.now();
  let zoom = null; // the current cell's (static/js/zoom.js)
  let keepMessage = false;

  function cell() {
    return document.getElementById("cell");
  }

  // The next cells' images, fetched now so the swap shows them at once.
  function prefetch(c) {
    for (const url of (c.dataset.prefetch || "").split(" ")) {
      if (url) new Image().src = url;
    }
  }

  function ready(c) {
    c.dataset.ready = "1";
    shownAt = performance.now();
    prefetch(c);
    zoom = window.hemaloopZoom(c);
  }

  document.body.addEventListener("htmx:load", function (evt) {
    const c = cell();
    if (c && (evt.detail.elt === c || evt.detail.elt.contains(c))) ready(c);
  });

  document.body.addEventListener("htmx:afterRequest", function (evt) {
    const c = cell();
    if (!c || evt.detail.successful) return;
    const xhr = evt.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Lease-Lost")) {
      // The hold on this cell ran out: fetch a fresh one, keeping the notice.
      keepMessage = true;
      htmx.ajax("GET", c.dataset.nextUrl, { target: "#cell", swap: "outerHTML" });
      return;
    }
    // A refused decision leaves the same cell in place: let it take keys again.
    if (c.contains(evt.detail.elt)) c.dataset.ready = "1";
  });

  // The time a reader spent on a cell, sent with the decision.
  document.body.addEventListener("htmx:configRequest", function (evt) {
    const c = cell();
    if (c && c.contains(evt.detail.elt)) {
      evt.detail.parameters["duration_ms"] = String(Math.round(performance.now() - shownAt));
    }
  });

  // A new cell clears the previous cell's message; a lost lease keeps its notice.
  document.body.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "cell") {
      if (keepMessage) { keepMessage = false; return; }
      const messages = document.getElementById("messages");
      if (messages) messages.innerHTML = "";
    }
  });

  function keyName(evt) {
    if (evt.key === "Enter") return "enter";
    if (evt.key === "Backspace") return "backspace";
    return evt.key.toLowerCase();
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]")) return;
    const c = cell();
    if (!c) return;
    const key = keyName(evt);
    if (zoom && zoom.key(key)) {
      evt.preventDefault();
      return;
    }
    for (const button of c.querySelectorAll("[data-hotkey]")) {
      if (!button.dataset.hotkey.split(" ").includes(key)) continue;
      evt.preventDefault();
      if (evt.repeat || !c.dataset.ready) return; // held key, or a decision in flight
      if (button.hasAttribute("data-reject")) {
        // Reject the suggestion: Accept stops working, a class key must follow.
        const suggestion = c.querySelector(".suggestion");
        suggestion.classList.add("rejected");
        for (const b of suggestion.querySelectorAll("[data-hotkey]")) b.dataset.hotkey = "";
        return;
      }
      delete c.dataset.ready;
      button.click();
      return;
    }
  });
})();
