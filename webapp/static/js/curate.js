// Keyboard and zoom for the curation page, as on the labeling page: a class key
// resolves, e excludes, n/p go to the next and previous cell of the worklist,
// Backspace undoes the resolution just made, +/-/wheel zoom, 0 fits the cell.
// Keys pause while the note field has focus; one key, one action.
(function () {
  "use strict";
  let zoom = 1, panX = 0, panY = 0, used = false;
  const box = document.querySelector(".zoom");
  const img = box ? box.querySelector("img") : null;

  function applyZoom() {
    if (!img) return;
    img.style.transform = `translate(${panX}px, ${panY}px) scale(${zoom})`;
    const level = document.querySelector(".zoom-level");
    if (!level) return;
    const native = img.naturalWidth ? img.clientWidth / img.naturalWidth : 1;
    const percent = Math.round(zoom * native * 100) + "% of native";
    level.textContent = zoom === 1 ? "fit (" + percent + ")" : percent;
  }

  function setZoom(z) {
    zoom = Math.min(8, Math.max(0.25, z));
    if (zoom === 1) { panX = 0; panY = 0; }
    applyZoom();
  }

  if (box) {
    if (img.complete) applyZoom(); else img.addEventListener("load", applyZoom);
    box.addEventListener("wheel", function (evt) {
      evt.preventDefault();
      setZoom(zoom * (evt.deltaY < 0 ? 1.25 : 0.8));
    }, { passive: false });
    let drag = null;
    box.addEventListener("pointerdown", function (evt) {
      drag = { x: evt.clientX - panX, y: evt.clientY - panY };
      box.setPointerCapture(evt.pointerId);
    });
    box.addEventListener("pointermove", function (evt) {
      if (!drag) return;
      panX = evt.clientX - drag.x; panY = evt.clientY - drag.y;
      applyZoom();
    });
    box.addEventListener("pointerup", function () { drag = null; });
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (evt.target.closest && evt.target.closest("input, textarea, select, [contenteditable]")) return;
    const key = evt.key === "Backspace" ? "backspace" : evt.key.toLowerCase();
    if (key === "+" || key === "=" || key === "-" || key === "0") {
      evt.preventDefault();
      setZoom(key === "0" ? 1 : zoom * (key === "-" ? 0.8 : 1.25));
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
