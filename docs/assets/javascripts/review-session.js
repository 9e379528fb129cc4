// The 复习 page as a review session, only while `kb serve` runs (kb/review_server.py writes the page;
// the published build has no .kb-session and this script does nothing there).
// Today's cards come from the server (the daily limit applied, as `kb review` picks them); the cards
// themselves are already on the page, rendered by the site's Markdown and KaTeX. Each grade is sent
// back with the page's token and appended to review-log.tsv by the server; the next card is shown
// only once the grade is written.
(function () {
  const root = document.querySelector(".kb-session");
  if (!root || root.dataset.started) return;
  root.dataset.started = "1";
  const progress = root.querySelector(".kb-session-progress");
  const byId = new Map(Array.from(root.querySelectorAll(".kb-card")).map((e) => [e.dataset.card, e]));
  const auth = { [root.dataset.header]: root.dataset.token };
  const NAMES = { 1: "重来", 2: "困难", 3: "良好", 4: "简单" };

  const controls = document.createElement("div");
  controls.className = "kb-session-controls";
  const button = (text, cls, act) => {
    const b = document.createElement("button");
    b.type = "button"; b.className = "md-button " + cls; b.textContent = text;
    b.addEventListener("click", act);
    controls.appendChild(b);
    return b;
  };
  const revealButton = button("看答案（空格）", "kb-reveal", () => reveal());
  const moreButton = button("完整说明（m）", "kb-more", () => more());
  const rateButtons = [1, 2, 3, 4].map((g) => button(`${g} ${NAMES[g]}`, "kb-rate", () => rate(g)));
  rateButtons.forEach((b, i) => { b.dataset.grade = String(i + 1); });
  const note = document.createElement("p");
  note.className = "kb-session-note";
  note.setAttribute("role", "status");
  root.append(controls, note);  // below the card: look at the card, then answer

  let todo = [], k = 0, done = 0, phase = "loading";

  function setPhase(p) {
    phase = p;
    root.dataset.phase = p;
    revealButton.hidden = p !== "front";
    moreButton.hidden = p !== "back";
    rateButtons.forEach((b) => { b.hidden = p !== "back" && p !== "busy"; b.disabled = p === "busy"; });
  }

  function current() { return todo[k] && byId.get(todo[k].card); }

  function show() {
    byId.forEach((e) => e.classList.remove("kb-current", "kb-revealed", "kb-more-shown"));
    if (k >= todo.length) {
      const where = root.dataset.topic ? `（主题 ${root.dataset.topic}）` : "";
      progress.textContent = todo.length ? `本次复习 ${done} 张，今天的卡片${where}复习完了。`
        : `今天没有到期的卡片${where}。`;
      setPhase("done");
      return;
    }
    const item = todo[k], card = current();
    card.classList.add("kb-current");
    progress.textContent = `[${k + 1}/${todo.length}] ${item.topic} · ${item.new ? "新卡片" : "复习"}`
      + (item.changed ? ` · ！${item.changed}` : "");
    setPhase("front");
  }

  function reveal() { if (phase === "front") { current().classList.add("kb-revealed"); setPhase("back"); } }
  function more() {
    if (phase === "back") { current().classList.add("kb-more-shown"); moreButton.hidden = true; }
  }

  async function rate(grade) {
    if (phase !== "back") return;
    const card = current();
    setPhase("busy");
    note.textContent = "";
    try {
      const response = await fetch(root.dataset.grade, {
        method: "POST", cache: "no-store", credentials: "same-origin",
        headers: { ...auth, "Content-Type": "application/json" },
        body: JSON.stringify({ card: card.dataset.card, digest: card.dataset.digest, grade }),
      });
      const got = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(got.error || `HTTP ${response.status}`);
      done += 1; k += 1;
      note.textContent = `已记录：${NAMES[grade]}（下次 ${got.next_due.replace("T", " ").slice(0, 16)} UTC）`;
      show();
    } catch (e) {
      note.textContent = `没有记录这次评分：${e.message}`;
      setPhase("back");
    }
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if ((e.key === " " || e.key === "Enter") && phase === "front") { e.preventDefault(); reveal(); }
    else if (e.key === "m" && phase === "back") { e.preventDefault(); more(); }
    else if (/^[1-4]$/.test(e.key) && phase === "back") { e.preventDefault(); rate(Number(e.key)); }
  });

  async function load() {
    setPhase("loading");
    k = 0;
    try {
      const response = await fetch(root.dataset.due, { cache: "no-store", headers: auth });
      const got = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(got.error || `HTTP ${response.status}`);
      const missing = got.cards.filter((c) => !byId.has(c.card)).length;
      todo = got.cards.filter((c) => byId.has(c.card));
      // Opened from a topic page (review/#topic): only that topic's cards.
      const anchor = decodeURIComponent(location.hash.slice(1));
      const topic = anchor && Array.from(root.querySelectorAll(".kb-topic")).find((e) => e.id === anchor);
      if (topic) todo = todo.filter((c) => c.topic === topic.dataset.topic);
      root.dataset.topic = topic ? topic.dataset.topic : "";
      if (missing) note.textContent = `有 ${missing} 张到期卡片不在本页上（页面比卡片旧）：刷新本页。`;
      show();
    } catch (e) {
      progress.textContent = `读不到今天的卡片：${e.message}（kb serve 还在运行吗？）`;
      setPhase("error");
    }
  }
  load();
  window.addEventListener("hashchange", load);  // another topic's link on this page: that topic's cards
})();
