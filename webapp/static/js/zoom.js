// Zoom and pan for a cell image, shared by the labeling and curation pages.
//
// hemaloopZoom(container) wires the container's `.zoom` box (wheel, drag) and
// returns a zoom that the page's own key handler drives: key(k) handles + = - 0
// and says whether it did.  Zoom 1 is the cell fitted to the panel; the level
// shown (`.zoom-level`) is relative to the image's native pixels, so a reader
// knows when they see every pixel.
window.hemaloopZoom = function (container) {
  "use strict";
  const box = container.querySelector(".zoom");
  const img = box ? box.querySelector("img") : null;
  let zoom = 1, panX = 0, panY = 0;

  function apply() {
    if (!img) return;
    img.style.transform = `translate(${panX}px, ${panY}px) scale(${zoom})`;
    const level = container.querySelector(".zoom-level");
    if (!level) return;
    const native = img.naturalWidth ? img.clientWidth / img.naturalWidth : 1;
    const percent = Math.round(zoom * native * 100) + "% of native";
    level.textContent = zoom === 1 ? "fit (" + percent + ")" : percent;
  }

  function set(z) {
    zoom = Math.min(8, Math.max(0.25, z));
    if (zoom === 1) { panX = 0; panY = 0; }
    apply();
  }

  if (img) {
    if (img.complete) apply(); else img.addEventListener("load", apply);
    box.addEventListener("wheel", function (evt) {
      evt.preventDefault();
      set(zoom * (evt.deltaY < 0 ? 1.25 : 0.8));
    }, { passive: false });
    let drag = null;
    box.addEventListener("pointerdown", function (evt) {
      drag = { x: evt.clientX - panX, y: evt.clientY - panY };
      box.setPointerCapture(evt.pointerId);
    });
    box.addEventListener("pointermove", function (evt) {
      if (!drag) return;
      panX = evt.clientX - drag.x; panY = evt.clientY - drag.y;
      apply();
    });
    box.addEventListener("pointerup", function () { drag = null; });
  }

  return {
    key: function (k) {
      if (k !== "+" && k !== "=" && k !== "-" && k !== "0") return false;
      set(k === "0" ? 1 : zoom * (k === "-" ? 0.8 : 1.25));
      return true;
    },
  };
};
