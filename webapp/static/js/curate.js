// Keyboard and zoom for the curation page, as on the labeling page: a class key
// resolves, e excludes, n/p go to the next and previous cell of the worklist,
// Backspace undoes the resolution just made, +/-/wheel zoom, 0 fits the cell.
// Keys pause while the note field has focus; one key, one action.
(function () {
  "use strict";
  let used = false;
  const zoom = window.hemaloopZoom(document);  // static/js/zoom.js

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]")) return;
    const key = evt.key === "Backspace" ? "backspace" : evt.key.toLowerCase();
    if (zoom.key(key)) {
      evt.preventDefault();
      return;
    }
    for (const el of document.querySelectorAll("[data-hotkey]")) {
      if (!el.dataset.hotkey.split(" ").includes(key)) continue;
      evt.preventDefault();
      if (evt.repeat || used) return; // a held key, or an action already on its way
      used = true;
      el.click();
      return;
    }
  });
})();
