// Applies data-css="..." as the element's style through the CSSOM.
// The Content-Security-Policy (webapp/headers.py) forbids style="" attributes,
// but not styles set from a script of our own; values such as a class's
// colour or a bar's width come from the server in data-css instead.
(function () {
  "use strict";
  function apply(root) {
    if (!root || !root.querySelectorAll) return;
    if (root.matches && root.matches("[data-css]")) root.style.cssText = root.dataset.css;
    root.querySelectorAll("[data-css]").forEach(function (el) {
      el.style.cssText = el.dataset.css;
    });
  }
  apply(document.documentElement);
  // htmx fires htmx:load on every piece of content it swaps in.
  document.addEventListener("htmx:load", function (evt) { apply(evt.target); });
})();
