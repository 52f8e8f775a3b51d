// Bulk verification: Enter or v confirms the grid; a second press while it
// posts does nothing.  (A file, not an inline script: see webapp/headers.py.)
(function () {
  "use strict";
  document.addEventListener("keydown", function (evt) {
    if (evt.target.closest("input[type=number], select")) return;
    if (evt.key !== "Enter" && evt.key !== "v") return;
    const form = document.getElementById("verify-form");
    if (!form) return;
    evt.preventDefault();
    if (form.dataset.sent) return;
    form.dataset.sent = "1";
    form.submit();
  });
})();
