// Render math with the vendored KaTeX.
// - Pages: pymdownx.arithmatex (generic mode) wraps TeX in \( \) and \[ \];
//   only those elements are rendered, so a "$" the learner typed in a journal
//   note stays a dollar sign.
// - Notebooks: nbconvert keeps the markdown cells' $…$ and $$…$$ as typed;
//   inside notebook markdown cells those delimiters are rendered too.
// Material's instant navigation swaps pages without a reload: re-render on
// every page through document$.
function renderMath() {
  const options = (delimiters) => ({ delimiters, throwOnError: false });
  for (const el of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(el, options([
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ]));
  }
  for (const el of document.querySelectorAll(".jupyter-wrapper .jp-MarkdownCell, .jupyter-wrapper .jp-RenderedMarkdown")) {
    renderMathInElement(el, options([
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ]));
  }
}
if (typeof document$ !== "undefined") {
  document$.subscribe(renderMath);
} else {
  document.addEventListener("DOMContentLoaded", renderMath);
}
