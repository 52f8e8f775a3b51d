// Keyboard flow for the labeling page: one key, one decision, next cell.
(function () {
  "use strict";
  let shownAt = performance.now();

  function cellForm() {
    return document.querySelector("#cell form.decisions");
  }

  // The time a reader spent on a cell, sent with the decision.
  document.body.addEventListener("htmx:configRequest", function (evt) {
    if (evt.detail.elt.closest && evt.detail.elt.closest("#cell")) {
      evt.detail.parameters["duration_ms"] = String(Math.round(performance.now() - shownAt));
    }
  });
  document.body.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "cell") {
      shownAt = performance.now();
      const messages = document.getElementById("messages");
      if (messages) messages.innerHTML = "";
    }
  });

  function keyName(evt) {
    if (evt.key === "Enter") return "enter";
    return evt.key.length === 1 ? evt.key.toLowerCase() : evt.key.toLowerCase();
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]")) return;
    const form = cellForm();
    if (!form) return;
    const key = keyName(evt);
    const buttons = document.querySelectorAll("#cell [data-hotkey]");
    for (const button of buttons) {
      const keys = button.dataset.hotkey.split(" ");
      if (keys.includes(key) && !button.disabled) {
        evt.preventDefault();
        if (evt.repeat) return; // a held key labels one cell, not a run of them
        button.click();
        return;
      }
    }
  });
})();
