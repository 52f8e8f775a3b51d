// Keyboard flow for the labeling page: one key, one decision, next cell.
//
// A cell takes keys only once htmx has processed it (data-ready), and stops
// taking them the moment one is used: a fast reader can never label the next
// cell with a key meant for this one, nor fall through to a plain form submit.
(function () {
  "use strict";
  let shownAt = performance.now();

  function cell() {
    return document.getElementById("cell");
  }

  document.body.addEventListener("htmx:load", function (evt) {
    const c = cell();
    if (c && (evt.detail.elt === c || evt.detail.elt.contains(c))) {
      c.dataset.ready = "1";
      shownAt = performance.now();
    }
  });

  // A refused decision leaves the same cell in place: let it take keys again.
  document.body.addEventListener("htmx:afterRequest", function (evt) {
    const c = cell();
    if (c && !evt.detail.successful && c.contains(evt.detail.elt)) c.dataset.ready = "1";
  });

  // The time a reader spent on a cell, sent with the decision.
  document.body.addEventListener("htmx:configRequest", function (evt) {
    const c = cell();
    if (c && c.contains(evt.detail.elt)) {
      evt.detail.parameters["duration_ms"] = String(Math.round(performance.now() - shownAt));
    }
  });

  // A new cell clears the previous cell's error message.
  document.body.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "cell") {
      const messages = document.getElementById("messages");
      if (messages) messages.innerHTML = "";
    }
  });

  function keyName(evt) {
    return evt.key === "Enter" ? "enter" : evt.key.toLowerCase();
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]")) return;
    const c = cell();
    if (!c || !c.querySelector("form.decisions")) return;
    const key = keyName(evt);
    for (const button of c.querySelectorAll("[data-hotkey]")) {
      if (!button.dataset.hotkey.split(" ").includes(key)) continue;
      evt.preventDefault();
      if (evt.repeat || !c.dataset.ready) return; // held key, or a decision in flight
      delete c.dataset.ready;
      button.click();
      return;
    }
  });
})();
