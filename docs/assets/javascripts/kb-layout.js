// Layout help that CSS alone cannot give (see kb.css):
// - each code line knows its indentation (--kb-indent), so that a wrapped line continues
//   under it, and may break after "(", "[" and "," or before "." before an identifier is split;
// - a display formula wider than its column says that it scrolls ("kb-scrolls" and a cue);
// - a diagram opens full size.
// Runs after katex-render.js (listed before it in mkdocs.yml), on every page through document$.
(function () {
  const BREAK_AFTER = /([(\[,])(?=\S|$)/;  // split() keeps the separator (capturing group)

  function indentCode() {
    const lines = document.querySelectorAll(
      ".md-typeset pre > code > span[id^='__span-']:not([data-kb-indent])");
    for (const line of lines) {
      const lead = /^[ \t]*/.exec(line.textContent)[0];
      line.dataset.kbIndent = String(lead.replace(/\t/g, "    ").length);
      line.style.setProperty("--kb-indent", line.dataset.kbIndent + "ch");
      const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
      const texts = [];
      while (walker.nextNode()) if (BREAK_AFTER.test(walker.currentNode.data)) texts.push(walker.currentNode);
      // ... and before the "." of an attribute (Pygments gives it a text node of its own).
      for (const text of line.querySelectorAll(".o")) {
        if (text.textContent === "." && text.previousSibling) text.before(document.createElement("wbr"));
      }
      for (const text of texts) {
        const parts = text.data.split(BREAK_AFTER);  // [before, sep, after, sep, ...]
        const frag = document.createDocumentFragment();
        for (let i = 0; i < parts.length; i++) {
          if (parts[i]) frag.append(parts[i]);
          if (i % 2 === 1) frag.append(document.createElement("wbr"));
        }
        text.replaceWith(frag);
      }
    }
  }

  function markWideFormulas() {
    for (const box of document.querySelectorAll(".md-typeset .katex-display")) {
      const wide = box.scrollWidth > box.clientWidth + 1;
      box.classList.toggle("kb-scrolls", wide);
      const cue = box.nextElementSibling && box.nextElementSibling.classList.contains("kb-scroll-cue")
        ? box.nextElementSibling : null;
      if (wide && !cue) {
        const c = document.createElement("span");
        c.className = "kb-scroll-cue";
        c.setAttribute("aria-hidden", "true");
        c.textContent = "⇆ 公式较宽：左右滑动查看";
        box.after(c);
      } else if (!wide && cue) cue.remove();
    }
  }

  function diagrams() {
    for (const chart of document.querySelectorAll(".md-typeset .mermaid")) {
      if (chart.parentElement.classList.contains("kb-diagram")) continue;
      const holder = document.createElement("div");
      holder.className = "kb-diagram";
      chart.replaceWith(holder);
      holder.append(chart);
      const open = document.createElement("button");
      open.type = "button";
      open.className = "kb-diagram-open";
      open.textContent = "⤢ 全屏查看图";
      holder.after(open);
      const close = document.createElement("button");
      close.type = "button";
      close.className = "md-button kb-diagram-close";
      close.textContent = "✕ 关闭";
      close.hidden = true;
      const toggle = (full) => {
        holder.classList.toggle("kb-diagram-full", full);
        close.hidden = !full;
        document.body.style.overflow = full ? "hidden" : "";
      };
      holder.append(close);
      open.addEventListener("click", () => toggle(true));
      holder.addEventListener("click", (e) => { if (e.target === close || holder.classList.contains("kb-diagram-full")) toggle(false); else toggle(true); });
      document.addEventListener("keydown", (e) => { if (e.key === "Escape") toggle(false); });
    }
  }

  function layout() {
    indentCode();
    diagrams();
    markWideFormulas();
    // Fonts and KaTeX settle after load; measure again then and whenever the width changes.
    window.addEventListener("load", markWideFormulas, { once: true });
  }
  window.addEventListener("resize", markWideFormulas);
  if (typeof document$ !== "undefined") document$.subscribe(layout);
  else document.addEventListener("DOMContentLoaded", layout);
})();
