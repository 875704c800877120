// Render the math that pymdownx.arithmatex (generic mode) leaves as \( \) and \[ \] in
// <span class="arithmatex"> / <div class="arithmatex">, with the KaTeX copy in assets/katex.
// document$ is Material's page observable, so math renders after instant navigation too.
(function () {
  function render(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.katexDone) return;
      var tex = el.textContent.trim();
      var display = tex.startsWith("\\[");
      if (tex.startsWith("\\(") || display) tex = tex.slice(2, -2);
      katex.render(tex, el, { displayMode: display, throwOnError: false });
      el.dataset.katexDone = "1";
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { render(document); });
  } else {
    document.addEventListener("DOMContentLoaded", function () { render(document); });
  }
})();
