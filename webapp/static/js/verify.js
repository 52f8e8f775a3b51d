// Bulk verification grid: tick the wrong cells, confirm the rest.
//
// The button's count follows the ticks; confirming more than a few cells asks
// first (a dialog: Enter confirms, Esc goes back); arrow keys move between the
// tiles and Space or x marks the focused one wrong.  A second Enter while the
// form posts does nothing.
(function () {
  "use strict";
  const form = document.getElementById("verify-form");
  if (!form) return;
  const tiles = Array.from(form.querySelectorAll(".verify-grid label"));
  const button = document.getElementById("confirm-grid");
  const dialog = document.getElementById("confirm-dialog");
  const total = Number(button.dataset.total);
  const confirmOver = Number(form.dataset.confirmOver);

  function counts() {
    const wrong = form.querySelectorAll("input[name=wrong]:checked").length;
    return { wrong: wrong, confirmed: total - wrong };
  }

  function update() {
    const n = counts();
    document.getElementById("confirm-count").textContent = n.confirmed;
    document.getElementById("wrong-count").textContent = n.wrong;
  }

  function send() {
    if (form.dataset.sent) return;
    form.dataset.sent = "1";
    form.submit();
  }

  function ask() {
    const n = counts();
    if (n.confirmed <= confirmOver) { send(); return; }
    document.getElementById("dialog-count").textContent = n.confirmed;
    document.getElementById("dialog-wrong").textContent = n.wrong;
    dialog.showModal();
    document.getElementById("dialog-yes").focus();
  }

  form.addEventListener("change", update);
  form.addEventListener("submit", function (evt) { evt.preventDefault(); ask(); });
  document.getElementById("dialog-yes").addEventListener("click", send);
  document.getElementById("dialog-no").addEventListener("click", function () { dialog.close(); });

  function columns() {
    if (tiles.length < 2) return 1;
    const top = tiles[0].offsetTop;
    const n = tiles.findIndex(function (t) { return t.offsetTop !== top; });
    return n < 0 ? tiles.length : n;
  }

  function move(from, step) {
    const to = Math.min(tiles.length - 1, Math.max(0, from + step));
    tiles[to].focus();
  }

  const steps = { ArrowLeft: -1, ArrowRight: 1 };
  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (dialog.open) return; // the dialog's own buttons and Esc
    if (evt.target.closest("input[type=number], select")) return;
    const at = tiles.indexOf(evt.target.closest ? evt.target.closest(".verify-grid label") : null);
    if (evt.key in steps || evt.key === "ArrowUp" || evt.key === "ArrowDown") {
      evt.preventDefault();
      if (at < 0) { tiles[0].focus(); return; }
      const step = evt.key in steps ? steps[evt.key] : (evt.key === "ArrowUp" ? -1 : 1) * columns();
      move(at, step);
      return;
    }
    if ((evt.key === " " || evt.key === "x") && at >= 0) {
      evt.preventDefault();
      const box = tiles[at].querySelector("input[type=checkbox]");
      box.checked = !box.checked;
      update();
      return;
    }
    if (evt.key === "Enter" || evt.key === "v") {
      evt.preventDefault();
      if (!evt.repeat) ask();
    }
  });
  update();
})();
