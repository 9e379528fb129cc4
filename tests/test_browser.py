"""The built site in a real browser (Debian's Chromium driven by Playwright).

Screenshots are kept in artifacts/screenshots/ as evidence of what was seen.
Without /usr/bin/chromium these tests skip, saying how to install it; CI sets
KB_REQUIRE_BROWSER=1, which turns that skip into a failure. Every page a test
opens is watched: a request to a host other than 127.0.0.1 or a JavaScript
error fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import ARGS, CHROMIUM, DESKTOP, PHONE, ROOT, SHOTS, kb_serving, serve  # noqa: E402,F401 (the browser fixture lives in conftest)

from kb import review


def watched(browser, base: str, viewport=DESKTOP):
    """A page that records every request and every JavaScript error."""
    context = browser.new_context(viewport=viewport, locale="zh-CN")
    pg = context.new_page()
    pg.requests, pg.errors, pg.base = [], [], base
    context.on("request", lambda r: pg.requests.append(r.url))  # workers' requests too
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    return context, pg


def check_and_close(context, pg) -> None:
    foreign = [
        u
        for u in pg.requests
        if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).hostname != "127.0.0.1"
    ]
    context.close()
    assert not foreign, f"requests left the machine: {foreign[:5]}"
    assert not pg.errors, f"JavaScript errors: {pg.errors[:5]}"


@pytest.fixture
def page(browser, served_site):
    context, pg = watched(browser, served_site)
    yield pg
    check_and_close(context, pg)


@pytest.fixture
def phone(browser, served_site):
    context, pg = watched(browser, served_site, PHONE)
    yield pg
    check_and_close(context, pg)


def test_chinese_renders_with_real_glyphs(page):
    page.goto(page.base + "journal/2025/12/31/20251231/")
    page.evaluate("() => document.fonts.ready.then(() => true)")  # every font the page asked for
    page.screenshot(path=SHOTS / "journal-20251231.png", full_page=False)
    # Draw characters in the page's own font: with no CJK font, every Chinese
    # character is the same "tofu" box, identical to an unassigned code point.
    pixels = page.evaluate("""() => {
        const font = getComputedStyle(document.querySelector('.md-typeset')).fontFamily;
        const draw = (ch) => {
            const c = document.createElement('canvas'); c.width = 48; c.height = 48;
            const g = c.getContext('2d'); g.font = '40px ' + font; g.fillText(ch, 2, 40);
            return Array.from(g.getImageData(0, 0, 48, 48).data).join(',');
        };
        return {a: draw('熵'), b: draw('学'), tofu: draw('\\u{10FFFD}')};
    }""")
    assert pixels["a"] != pixels["b"], "two different Chinese characters render identically (tofu boxes)"
    assert pixels["a"] != pixels["tofu"], "Chinese renders as the missing-glyph box"


def test_display_formula_is_rendered_by_katex(page):
    page.goto(page.base + "foundations/mse-conditional-mean/")
    page.wait_for_selector(".katex-display")
    page.screenshot(path=SHOTS / "foundations-math.png", full_page=False)
    assert page.locator(".katex-display").count() >= 3
    raw = page.evaluate(
        "() => Array.from(document.querySelectorAll('.arithmatex'))"
        ".filter(e => !e.querySelector('.katex')).map(e => e.textContent)"
    )
    assert raw == [], f"unrendered TeX left on the page: {raw[:2]}"


def test_notebook_prose_math_renders_and_the_notebook_can_be_downloaded(page):
    page.goto(page.base + "topics/dpo_toy/")
    page.wait_for_selector(".jp-MarkdownCell .katex")
    raw = page.evaluate(
        "() => Array.from(document.querySelectorAll('.jp-MarkdownCell'))"
        ".map(e => e.innerText).filter(t => /\\$[^$\\s][^$]*\\$/.test(t))"
    )
    assert raw == [], f"raw $…$ left in notebook prose: {raw[:2]}"
    link = page.locator("a.kb-download")
    assert link.get_attribute("href") == "dpo_toy.ipynb"
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "dpo_toy.ipynb"


def test_claim_blocks_show_their_status(page):
    page.goto(page.base + "foundations/mse-conditional-mean/")
    verified = page.locator(".admonition.claim.verified").first
    refuted = page.locator(".admonition.claim.refuted").first
    verified.scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "claim-verified.png")
    assert "已验证" in verified.locator(".admonition-title").inner_text()
    assert "已证伪" in refuted.locator(".admonition-title").inner_text()
    colour = verified.evaluate("e => getComputedStyle(e).borderLeftColor")
    assert colour == "rgb(46, 125, 50)", colour  # --kb-verified
    assert verified.locator("a[href*='code/snippets/']").count() >= 1, "no link to the deciding test"


def test_a_jump_to_a_journal_line_highlights_it_and_shows_its_verdict(page, model):
    post = model.posts["20251231"]
    line = next(l for l, refs in model.refs_by_line[post.src_uri].items() if any(r.kind == "journal" for r, _ in refs))
    page.goto(page.base + f"journal/2025/12/31/20251231/#j-{line}")
    # Past the flash animation (1.5 s): it is brought to its end, the highlight that stays.
    page.evaluate("() => document.getAnimations().filter(a => a.animationName === 'kb-flash').forEach(a => a.finish())")
    holder = page.locator(f"#j-{line}").locator("xpath=..")
    colour = holder.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour not in ("rgba(0, 0, 0, 0)", "transparent"), colour
    labels = page.evaluate(
        "() => Array.from(document.querySelectorAll('li, p')).map(e =>"
        " Array.from(e.querySelectorAll(':scope > .kb-marker')).map(m => m.firstChild.textContent))"
    )
    assert all(len(set(ls)) == len(ls) for ls in labels), "a line repeats the same verdict label"
    page.screenshot(path=SHOTS / "journal-jump.png")


SEARCHES = {  # the learner's words -> the page about them, which must come first
    "均方差loss": "foundations/mse-conditional-mean/",
    "KL散度": ("topics/grpo/", "topics/dpo/"),
    "target_Q_value": "topics/sac/critic/",
    "重参数化": "topics/sac/actor/",
    "优势函数": "topics/grpo/",
    "double Q": "topics/sac/double-q/",
    "熵": "topics/sac/entropy/",
    "4D": "topics/neoverse/",
    # A term by any of its names (the glossary, docs/glossary.md, gives them to the page that explains it).
    "重要性采样": "topics/grpo/",
    "importance sampling": "topics/grpo/",
    "高斯泼溅": "topics/neoverse/gaussian-splatting/",
    "3DGS": "topics/neoverse/gaussian-splatting/",
    "参考模型": "topics/dpo/",
    "参考策略": "topics/dpo/",
    "reference model": "topics/dpo/",
    "目标网络": "topics/sac/target-networks/",
    "Polyak": "topics/sac/target-networks/",
    "过估计": "topics/sac/double-q/",
}
GENERATED_LISTS = ("claims/", "questions/", "review/")  # they repeat the pages: never above them


def search(page, query: str) -> dict:
    if page.url.rstrip("/") != page.base.rstrip("/"):
        page.goto(page.base)
    box = page.locator(".md-search__input")
    box.click()
    # Material's search worker builds its index first; then type as an IME commits text.
    page.wait_for_function(
        "() => !document.querySelector('.md-search-result__meta').textContent.includes('初始化')", timeout=60_000
    )
    box.fill("")
    page.keyboard.insert_text(query)
    page.keyboard.press("End")
    page.wait_for_function(
        "(q) => document.querySelector('.md-search__input').value === q"
        " && document.querySelectorAll('.md-search-result__item').length > 0",
        arg=query,
        timeout=15_000,
    )
    # The worker answers each query in turn, and Material lists the answer as it arrives: read once
    # the last query sent is this one and every query has its answer.
    page.wait_for_function(
        "(q) => kbSearch.sent.at(-1) === q && kbSearch.answered === kbSearch.sent.length", arg=query, timeout=15_000
    )
    return page.evaluate(RESULTS)


# Counts the queries the page sends Material's search worker and the answers it gets back (message
# types 2 and 3 of Material's search worker); it changes nothing. Added before the page loads.
SEARCH_MESSAGES = """(() => {
    const Base = window.Worker;
    window.kbSearch = {sent: [], answered: 0};
    window.Worker = class extends Base {
        constructor(...args) {
            super(...args);  // this listener runs before Material's, which lists the results
            this.addEventListener('message', (e) => { if (e.data && e.data.type === 3) window.kbSearch.answered++; });
        }
        postMessage(message, ...rest) {
            if (message && message.type === 2) window.kbSearch.sent.push(message.data);
            return super.postMessage(message, ...rest);
        }
    }; })();"""


RESULTS = """() => ({
        hrefs: Array.from(document.querySelectorAll('.md-search-result__item > a'))
                    .map(a => new URL(a.href).pathname.replace(/^\\//, '')),
        missing: Array.from(document.querySelectorAll('.md-search-result__item s')).map(e => e.textContent),
        teasers: Array.from(document.querySelectorAll('.md-search-result__article p:not(.md-search-result__terms)'))
                      .map(e => e.textContent),
    })"""


def test_search_finds_the_learners_words_and_ranks_the_page_about_them_first(page):
    page.add_init_script(SEARCH_MESSAGES)
    problems = []
    for query, expected in SEARCHES.items():
        found = search(page, query)
        if not found["hrefs"] or not found["hrefs"][0].startswith(expected):
            problems.append(f"{query}: first results {found['hrefs'][:3]}, expected {expected}")
        if found["missing"]:
            problems.append(f"{query}: terms shown as missing {found['missing']}")
        if [t for t in found["teasers"] if "\\(" in t or "\\[" in t or "$" in t or " … " in t]:
            problems.append(f"{query}: raw TeX or a formula left out (…) in a teaser")
        # Crowding: a generated list in the first five above a learner's page that also matches (when
        # fewer than five places match otherwise, the lists may follow them there).
        hrefs = found["hrefs"]
        crowd = [
            h
            for i, h in enumerate(hrefs[:5])
            if h.startswith(GENERATED_LISTS) and any(not x.startswith(GENERATED_LISTS) for x in hrefs[i + 1 :])
        ]
        if crowd:
            problems.append(f"{query}: generated lists in the first five, above pages about it: {hrefs[:8]}")
        if query == "熵":
            page.screenshot(path=SHOTS / "search-entropy.png")
    teasers = search(page, "importance ratio")["teasers"]  # a section that opens with a formula
    if not any("ρ_t=π_θ(o_t|q,o_<t)" in t for t in teasers):
        problems.append(f"importance ratio: the formula is not shown as text in a teaser: {teasers[:2]}")
    hrefs = search(page, "均方差")["hrefs"]  # the word inside the learner's mixed token 均方差loss
    if not (any("journal/2025/12/30/" in h for h in hrefs) and any("journal/2025/12/31/" in h for h in hrefs)):
        problems.append(f"均方差 misses the notes that say 均方差loss: {hrefs}")
    assert not problems, "\n".join(problems)


def pages_with_code_or_math(site: Path) -> list[str]:
    """Every built page that shows a code block, a formula or a notebook."""
    out = []
    for p in sorted(site.rglob("index.html")):
        rel = str(p.parent.relative_to(site))
        if rel.startswith(("assets", "search")):
            continue
        text = p.read_text(encoding="utf-8")
        if "<pre" in text or 'class="arithmatex"' in text or "jupyter-wrapper" in text:
            out.append("" if rel == "." else rel + "/")
    return out


CHUNKS = 2
OVERFLOWING = """() => Array.from(document.querySelectorAll(
    '.md-content pre > code, .md-content .katex-display, .jupyter-wrapper pre'))
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.className || e.tagName} ${e.scrollWidth}>${e.clientWidth}: ${e.textContent.slice(0, 50)}`)"""


EMPTY_INDEX = json.dumps(
    {
        "config": {
            "lang": ["en"],
            "separator": "[\\s]+",
            "pipeline": [],
            "fields": {"title": {"boost": 1000}, "text": {"boost": 1}, "tags": {"boost": 1e6}},
        },
        "docs": [],
    }
)
MERMAID_STUB = "window.mermaid = {initialize() {}, run() { return Promise.resolve(); }};"


# The source pages (code/...): one template, and no formula, diagram or notebook. The one script that
# shapes them is kb-layout.js (each code line's indentation and break points). Each one's content is
# put into one loaded source page in turn, kb-layout.js runs on it as on a page load (it subscribes to
# Material's document$, which replays the page to a new subscriber), and it is measured there: the same
# layout as a navigation to it (every box of its code the same size, every line the same number of
# lines; checked on the first page each time, and on all 75 at both widths when this was written).
SWAP_IN = """async (url) => {
    const html = await (await fetch(url)).text();
    const fresh = new DOMParser().parseFromString(html, 'text/html').querySelector('.md-content');
    document.querySelector('.md-content').replaceWith(fresh); }"""
LAYOUT = """() => ({
    page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
    code: Array.from(document.querySelectorAll('.md-content pre > code'))
               .map(c => [c.scrollWidth, c.clientWidth, c.scrollHeight]),
    lines: Array.from(document.querySelectorAll('.md-content pre > code > span[id^="__span-"]'))
                .map(l => [l.getClientRects().length, l.dataset.kbIndent, l.querySelectorAll('wbr').length]),
    })"""

# What katex-render.js, Mermaid or a notebook's styles would shape.
OTHER_SCRIPTS = ('class="arithmatex"', 'class="mermaid"', "jupyter-wrapper")


def swap_in(page, path: str) -> None:
    page.evaluate(SWAP_IN, page.base + path)
    page.add_script_tag(url=page.base + "assets/javascripts/kb-layout.js")


def measure_sources(page, site: Path, sources: list[str], check: str) -> list[str]:
    """``check``'s findings on each source page, measured by swapping its content into a loaded one."""
    if not sources:
        return []
    shaped = [
        p for p in sources if any(m in (site / p / "index.html").read_text(encoding="utf-8") for m in OTHER_SCRIPTS)
    ]
    assert not shaped, f"source pages with content another script shapes (load them instead): {shaped}"
    page.goto(page.base + sources[0])
    loaded = page.evaluate(LAYOUT)
    assert loaded["lines"], f"{sources[0]}: no code lines to measure"
    swap_in(page, sources[0])
    assert page.evaluate(LAYOUT) == loaded, f"{sources[0]}: swapped in, it is laid out unlike the page loaded"
    problems = []
    for path in sources:
        swap_in(page, path)
        problems += [f"{path}: {p}" for p in page.evaluate(check)]
    return problems


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_code_and_formulas_are_in_full_view_at_1366px(browser, served_site, built_site, chunk):
    paths = pages_with_code_or_math(built_site)
    assert len(paths) > 50
    context, page = watched(browser, served_site)
    # Layout only: each page would otherwise build the whole search index and parse Mermaid (2.7 MB),
    # which shape nothing measured here; the page with a diagram keeps the real Mermaid.
    context.route("**/search/search_index.json", lambda r: r.fulfill(body=EMPTY_INDEX, content_type="application/json"))
    context.route(
        "**/mermaid.min.js",
        lambda r: (
            r.continue_()
            if "neoverse" in r.request.frame.url
            else r.fulfill(body=MERMAID_STUB, content_type="text/javascript")
        ),
    )
    problems = []
    mine = paths[chunk::CHUNKS]
    for path in [p for p in mine if not p.startswith("code/")]:
        page.goto(page.base + path)
        page.wait_for_function("() => !document.querySelector('.arithmatex') || document.querySelector('.katex')")
        problems += [f"{path}: {p}" for p in page.evaluate(OVERFLOWING)]
    problems += measure_sources(page, built_site, [p for p in mine if p.startswith("code/")], OVERFLOWING)
    check_and_close(context, page)
    assert not problems, "\n".join(problems[:20])


# A defect planted in one source page's content: code that no longer wraps (a line of 203 characters
# among it, wider than the column at 1366 px) and a box wider than a phone.
PLANTED = (
    "<style>.md-typeset pre > code { white-space: pre !important; overflow-wrap: normal; }</style>"
    f"<pre><code>total = {' + '.join(['weight'] * 22)}</code></pre>"
    '<div style="width: 520px; height: 4px"></div>'
)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1366px", "390px"])
def test_a_source_page_measured_by_swapping_it_in_still_shows_a_defect(browser, served_site, built_site, viewport):
    sources = [p for p in all_pages(built_site) if p.startswith("code/")]
    planted = "code/snippets/sac/critic/"
    assert planted in sources and sources[0] != planted
    html = (built_site / planted / "index.html").read_text(encoding="utf-8")
    opening = '<article class="md-content__inner md-typeset">'
    assert opening in html
    context, page = watched(browser, served_site, viewport)
    context.route(
        lambda url: url.endswith("/" + planted),
        lambda r: r.fulfill(body=html.replace(opening, opening + PLANTED, 1), content_type="text/html"),
    )
    found = measure_sources(page, built_site, [sources[0], planted], SIDEWAYS if viewport is PHONE else OVERFLOWING)
    check_and_close(context, page)
    assert found and all(f.startswith(planted) for f in found), found
    assert any("code" in f.lower() for f in found), found
    if viewport is PHONE:
        assert any("the page is" in f for f in found), found


def test_an_88_character_snippet_line_fits_its_code_block_at_1366px(page):
    page.goto(page.base + "topics/sac/critic/")
    fits = page.evaluate("""() => { const code = document.querySelector('.md-content pre > code');
        const probe = document.createElement('span'); probe.textContent = 'x'.repeat(88);
        probe.style.whiteSpace = 'pre'; code.appendChild(probe);
        const ok = probe.getBoundingClientRect().width <= code.clientWidth; probe.remove(); return ok; }""")
    assert fits, "an 88-character line does not fit a code block at 1366 px: it would wrap"


def test_on_a_phone_code_wraps_and_wide_formulas_scroll_in_their_own_box(phone):
    for path in ("topics/sac/critic/", "topics/grpo/", "topics/flow-grpo/"):
        phone.goto(phone.base + path)
        phone.wait_for_selector(".katex-display")
        code = phone.evaluate(
            "() => Array.from(document.querySelectorAll('.md-content pre > code'))"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).length"
        )
        assert code == 0, f"{path}: code blocks hide text behind a scroll at 390 px"
        wide = phone.evaluate(
            "() => Array.from(document.querySelectorAll('.katex-display'))"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => getComputedStyle(e).overflowX)"
        )
        assert all(o == "auto" for o in wide), wide
    phone.screenshot(path=SHOTS / "phone-flow-grpo.png")


def all_pages(site: Path) -> list[str]:
    """Every page of the built site (docs-relative URL paths)."""
    out = []
    for p in sorted(site.rglob("index.html")):
        rel = p.parent.relative_to(site).as_posix()
        if not rel.startswith(("assets", "search")):
            out.append("" if rel == "." else rel + "/")
    return out


# What a phone reader would have to scroll sideways for: the page itself, a code block, or a display
# formula that scrolls without its cue (kb-layout.js marks it "kb-scrolls" and adds the "⇆" line).
SIDEWAYS = """() => {
    const out = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth) out.push(`the page is ${doc.scrollWidth} px wide`);
    for (const e of document.querySelectorAll('.md-content pre > code, .jupyter-wrapper pre'))
        if (e.scrollWidth > e.clientWidth + 1) out.push(`code scrolls: ${e.textContent.slice(0, 40)}`);
    for (const e of document.querySelectorAll('.md-content .katex-display'))
        if (e.scrollWidth > e.clientWidth + 1 && !(e.classList.contains('kb-scrolls')
            && e.nextElementSibling && e.nextElementSibling.classList.contains('kb-scroll-cue')
            && e.nextElementSibling.offsetHeight > 0))
            out.push(`formula scrolls with no cue: ${e.textContent.slice(0, 40)}`);
    return out; }"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_no_page_scrolls_sideways_at_390px(browser, served_site, built_site, chunk):
    paths = all_pages(built_site)
    assert len(paths) > 100
    context, page = watched(browser, served_site, PHONE)
    context.route("**/search/search_index.json", lambda r: r.fulfill(body=EMPTY_INDEX, content_type="application/json"))
    problems = []
    mine = paths[chunk::CHUNKS]
    for path in [p for p in mine if not p.startswith("code/")]:
        page.goto(page.base + path)
        page.wait_for_function("() => !document.querySelector('.arithmatex') || document.querySelector('.katex')")
        problems += [f"{path}: {p}" for p in page.evaluate(SIDEWAYS)]
    problems += measure_sources(page, built_site, [p for p in mine if p.startswith("code/")], SIDEWAYS)
    check_and_close(context, page)
    assert not problems, "\n".join(problems[:20])


def test_on_a_phone_wrapped_code_keeps_its_indentation_and_identifiers(phone):
    phone.goto(phone.base + "topics/sac/critic/")
    found = phone.evaluate(r"""() => {
        const out = [];
        for (const line of document.querySelectorAll('.md-content pre > code > span[id^="__span-"]')) {
            const rects = Array.from(line.getClientRects());
            const text = line.textContent.replace(/\\n$/, '');
            const lead = /^ */.exec(text)[0].length;
            const range = document.createRange();
            const walker = document.createTreeWalker(line, NodeFilter.SHOW_TEXT);
            const starts = [];  // x of the first character of each wrapped piece
            let lastTop = null;
            while (walker.nextNode()) {
                const t = walker.currentNode;
                for (let i = 0; i < t.data.length; i++) {
                    if (/\s/.test(t.data[i])) continue;
                    range.setStart(t, i); range.setEnd(t, i + 1);
                    const r = range.getBoundingClientRect();
                    if (lastTop === null || r.top > lastTop + 2) starts.push({x: r.left, w: r.width, ch: t.data[i],
                        prev: i > 0 ? t.data[i - 1] : ''});
                    lastTop = r.top;
                }
            }
            // The hanging indent is capped at half the code block (0.45 of the line's box: its padding).
            const box = line.getBoundingClientRect();
            if (starts.length > 1) out.push({lead, starts, half: box.left + 0.45 * box.width, text: text.slice(0, 60)});
        }
        return out; }""")
    assert found, "no code line wraps at 390 px on the SAC critic page: the test measures nothing"
    problems = []
    for line in found:
        first, *rest = line["starts"]
        for piece in rest:
            # At its own indentation or right of it (or at half the block, for a line indented further);
            # 2 px for sub-pixel glyph positions.
            if piece["x"] < min(first["x"], line["half"]) - 2:
                problems.append(f"continues left of its indentation: {line['text']} {line['starts']}")
            if piece["prev"].isalnum() and piece["ch"].isalnum() and piece["prev"] != "":
                problems.append(f"an identifier split across lines: {line['text']}")
    assert not problems, "\n".join(problems[:10])


def test_on_a_phone_notebook_code_gets_the_width_page_code_gets(phone):
    phone.goto(phone.base + "topics/sac/critic/")
    page_width = phone.evaluate("() => document.querySelector('.md-content pre > code').clientWidth")
    phone.goto(phone.base + "topics/dpo_toy/")
    notebook_width = phone.evaluate("() => document.querySelector('.jupyter-wrapper .jp-CodeCell pre').clientWidth")
    # The same column, give or take the notebook's cell border and padding: five characters at most
    # (a character of 13 px monospace is 7.8 px); the prompt column alone took 64 px.
    assert notebook_width >= page_width - 5 * 7.8, f"notebook code {notebook_width} px, page code {page_width} px"


def test_a_diagram_opens_full_size_on_a_phone(phone):
    phone.goto(phone.base + "topics/neoverse/")
    phone.wait_for_function(
        "() => { const e = document.querySelector('.mermaid'); return e && e.getBoundingClientRect().height > 50; }",
        timeout=30_000,
    )
    small = phone.evaluate("() => document.querySelector('.mermaid').getBoundingClientRect().width")
    phone.locator(".kb-diagram-open").first.click()
    big = phone.evaluate("() => document.querySelector('.kb-diagram-full > .mermaid').getBoundingClientRect().width")
    assert big >= 2 * small, f"full size is {big} px wide, the diagram in the page {small} px"
    phone.screenshot(path=SHOTS / "neoverse-diagram-full.png")
    phone.keyboard.press("Escape")
    assert phone.locator(".kb-diagram-full").count() == 0


def test_mermaid_is_loaded_only_by_pages_with_a_diagram(built_site):
    with_script = sorted(
        p.parent.relative_to(built_site).as_posix()
        for p in built_site.rglob("index.html")
        if "mermaid.min.js" in p.read_text(encoding="utf-8")
    )
    with_diagram = sorted(
        p.parent.relative_to(built_site).as_posix()
        for p in built_site.rglob("index.html")
        if 'class="mermaid"' in p.read_text(encoding="utf-8")
    )
    assert with_diagram and with_script == with_diagram


# The contrast of every verdict marker, chip and pill, as the browser paints it: the text colour over
# the background it sits on (each ancestor's background blended in), WCAG 2 relative luminance.
CONTRAST = """(selector) => {
    const rgba = (s) => { const m = s.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
    const over = (top, bottom) => { const a = top[3]; return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat(1); };
    const background = (e) => {
        const layers = [];
        for (let n = e; n; n = n.parentElement) {
            const c = rgba(getComputedStyle(n).backgroundColor);
            if (c[3] > 0) layers.push(c);
            if (c[3] >= 1) break;
        }
        let colour = [255, 255, 255, 1];
        for (const layer of layers.reverse()) colour = over(layer, colour);
        return colour;
    };
    const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                         return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
    return Array.from(document.querySelectorAll(selector)).filter(e => e.offsetParent !== null).map(e => {
        const bg = background(e);
        const fg = over(rgba(getComputedStyle(e).color), bg);
        const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
        return {cls: e.className, text: e.textContent.slice(0, 30), ratio: (a + 0.05) / (b + 0.05),
                size: parseFloat(getComputedStyle(e).fontSize)};
    }); }"""
MARKERS = ".kb-marker, .kb-marker a, .kb-chip, .kb-status, .kb-status-text, .kb-live"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_verdict_marker_chip_and_pill_has_aa_contrast(browser, served_site, built_site, model, scheme):
    pages = [
        p
        for p in all_pages(built_site)
        if any(
            f'class="{c}' in (built_site / p / "index.html").read_text(encoding="utf-8")
            for c in ("kb-marker", "kb-chip", "kb-status")
        )
    ]
    assert "claims/" in pages and any(p.startswith("journal/20") for p in pages)
    measured, problems, kinds = 0, [], set()
    # Each page is loaded once, at 1366 px, measured, resized to 390 px and measured again: what is
    # shown and its colours come from CSS (media queries and the colour scheme), which the resize
    # applies as a load at 390 px does (the same findings on all 14 pages, both schemes, when this was
    # written). The claims page, with rules of its own for a phone, is loaded at 390 px too to check it.
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN", color_scheme=scheme)
    context.route("**/search/search_index.json", lambda r: r.fulfill(body=EMPTY_INDEX, content_type="application/json"))
    pg = context.new_page()
    expected = "slate" if scheme == "dark" else "default"
    shot, resized = SHOTS / "markers-dark.png", None
    for path in pages:
        pg.set_viewport_size(DESKTOP)
        pg.goto(served_site + path)
        assert pg.evaluate("() => document.body.dataset.mdColorScheme") == expected
        if scheme == "dark" and path == "journal/2025/12/30/20251230/":
            pg.screenshot(path=shot)
            shot = None
        for viewport in (DESKTOP, PHONE):
            pg.set_viewport_size(viewport)
            found = pg.evaluate(CONTRAST, MARKERS)
            if path == "claims/" and viewport is PHONE:
                resized = found
            for m in found:
                measured += 1
                kinds.add(m["cls"].split()[0] + " " + (m["cls"].split()[1:] or [""])[0] if m["cls"] else "a")
                if m["ratio"] < 4.5:  # WCAG 2 AA, text under 18.66 px bold / 24 px
                    problems.append(
                        f"{path} at {viewport['width']} px {m['cls']} {m['text']!r}: "
                        f"{m['ratio']:.2f}:1 at {m['size']:.1f} px"
                    )
    pg.goto(served_site + "claims/")  # at 390 px
    assert pg.evaluate(CONTRAST, MARKERS) == resized, "claims/ resized to 390 px is not the page loaded at 390 px"
    if scheme == "dark" and shot:
        pg.set_viewport_size(DESKTOP)
        pg.goto(served_site + "journal/2025/12/30/20251230/")
        pg.screenshot(path=shot)
    context.close()
    for status in {c.status.key for c in model.claims}:  # every status a claim has now
        assert f"kb-status {status}" in kinds and f"kb-chip {status}" in kinds, (status, sorted(kinds))
    assert "kb-marker verified" in kinds and "kb-marker answered" in kinds, sorted(kinds)
    assert measured > 100
    assert not problems, f"{len(problems)} of {measured} below 4.5:1:\n" + "\n".join(problems[:20])


def test_the_claims_page_is_compact_and_filters_what_was_wrong(page, phone, model):
    phone.goto(phone.base + "claims/")
    height = phone.evaluate("() => document.documentElement.scrollHeight")
    assert height < 16_104 / 3, f"the claims page is {height} px tall on a phone"
    phone.screenshot(path=SHOTS / "claims-phone.png")
    page.goto(page.base + "claims/")
    rows = page.locator(".kb-claims-table tbody tr")
    assert rows.count() == len(model.claims)
    page.locator("label[for='kb-filter-wrong']").click()
    shown = page.evaluate(
        "() => Array.from(document.querySelectorAll('.kb-claims-table tbody tr'))"
        ".filter(r => r.offsetParent !== null).map(r => r.dataset.status)"
    )
    wrong = sum(c.status.key in ("refuted", "qualified") for c in model.claims)
    assert len(shown) == wrong and set(shown) <= {"refuted", "qualified"}, shown
    page.screenshot(path=SHOTS / "claims-wrong.png", full_page=True)
    page.locator("label[for='kb-filter-all']").click()
    assert page.evaluate(
        "() => Array.from(document.querySelectorAll('.kb-claims-table tbody tr'))"
        ".filter(r => r.offsetParent !== null).length"
    ) == len(model.claims)


def test_a_figure_opens_full_size(page):
    page.goto(page.base + "topics/dpo/")
    figure = page.locator("a.glightbox").first
    figure.scroll_into_view_if_needed()
    figure.click()
    page.wait_for_selector(".gslide-image img", state="visible")
    page.screenshot(path=SHOTS / "figure-zoom.png")


def test_the_review_page_lists_the_cards_with_their_backs_folded(page, model):
    page.goto(page.base + "review/")
    cards = page.locator("details.question")
    assert cards.count() == len(review.cards(model))
    first = cards.first
    assert first.evaluate("e => e.open") is False
    first.locator("summary").click()
    assert first.evaluate("e => e.open") is True and "查看原文" in first.inner_text()
    page.wait_for_selector("details .katex", state="attached")
    page.screenshot(path=SHOTS / "review.png")
    page.goto(page.base + "topics/sac/critic/")
    assert page.locator("a[href$='review/#sac']").count() == 1, "a topic page links to its cards"


def test_mermaid_diagram_renders_offline(page):
    page.goto(page.base + "topics/neoverse/")
    assert page.locator(".mermaid").count() >= 1, "the NeoVerse page has no Mermaid diagram"
    # Material renders the diagram into a closed shadow root: the raw source text
    # disappears from the page and the element takes the diagram's height.
    page.wait_for_function(
        "() => { const e = document.querySelector('.mermaid');"
        " return e && e.textContent.trim() === '' && e.getBoundingClientRect().height > 150; }",
        timeout=15_000,
    )
    page.locator(".mermaid").scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "neoverse-mermaid.png")


def test_a_hostile_note_shows_its_text_runs_nothing_and_requests_nothing(browser, hostile_site):
    server, base = serve(hostile_site)
    try:
        context, pg = watched(browser, base)
        pg.goto(base + "journal/2026/01/02/20260102/")
        pg.wait_for_load_state("networkidle")
        assert pg.evaluate("() => window.kbPwned") is None
        assert "pwned" not in pg.title()
        text = pg.locator("article").inner_text()
        for words in ("List<int>", "<script>", ":x:", '--8<-- ".git/config"', "!!! claim"):
            assert words in text, words
        pg.screenshot(path=SHOTS / "hostile-note.png", full_page=True)
        check_and_close(context, pg)
    finally:
        server.shutdown()


LIVE_PAGE = """---
title: 实时检查
---
# 实时检查

!!! claim "均方误差分解为方差加偏差的平方"
    id: live-decomposition
    status: verified
    test: snippets/foundations/mse.py::test_mse_decomposes_into_variance_plus_squared_bias
    counterfactual: variance_correction=1 "若分解式里用无偏的样本方差（除以 n−1）"

    本页只为 `kb serve` 的状态行测试而设。
"""


@pytest.fixture
def live_site(mini_project):
    """`kb serve` on the mini project, as a learner runs it (stopped at the end)."""
    # A page of its own, with one claim and no notebook: its checks take a couple of seconds.
    (mini_project / "docs/foundations/live.md").write_text(LIVE_PAGE, encoding="utf-8")
    with kb_serving(mini_project, "foundations/live/") as (base, _):
        yield mini_project, base


def test_while_serving_a_saved_page_shows_whether_its_claims_still_hold(browser, live_site, built_site):
    import time

    root, base = live_site
    context, pg = watched(browser, base)
    pg.goto(base + "foundations/live/")
    line = pg.locator(".kb-live")
    assert line.count() == 1
    page_file = root / "docs/foundations/live.md"
    original = page_file.read_text(encoding="utf-8")

    def save_and_wait(text: str, state: str, words: str) -> tuple[float, float]:
        """Seconds from the save to "checking" on the line, and to the verdict."""
        start = time.monotonic()
        page_file.write_text(text, encoding="utf-8")
        pg.wait_for_function(
            "() => { const e = document.querySelector('.kb-live'); return e && e.dataset.state === 'running'; }",
            timeout=10_000,
            polling=50,
        )
        checking = time.monotonic() - start
        pg.wait_for_function(
            "([state, words]) => { const e = document.querySelector('.kb-live');"
            " return e && e.dataset.state === state && e.textContent.includes(words); }",
            arg=[state, words],
            timeout=60_000,
        )
        return checking, time.monotonic() - start

    broken = original.replace("status: verified", "status: refuted")
    red_checking, red = save_and_wait(broken, "failed", "均方误差分解为方差加偏差的平方")
    # The reason the terminal gives, and a link to the claim.
    said = pg.locator(".kb-live").inner_text()
    link = pg.locator(".kb-live a").get_attribute("href")
    pg.screenshot(path=SHOTS / "live-red.png")
    green_checking, green = save_and_wait(original, "passed", "通过")
    # Pages with nothing to check have no line.
    pg.goto(base)
    home_lines = pg.locator(".kb-live").count()
    check_and_close(context, pg)
    assert red_checking < 1 and green_checking < 1, (
        f"'checking' {red_checking:.2f} s / {green_checking:.2f} s after the save"
    )
    assert link == "#claim-live-decomposition", link
    assert "live-decomposition" not in said and "：" in said.split("」", 1)[1], said
    # The 5 s goal is measured by `make bench` (devtools.bench) on an idle machine; here the line only has to get there.
    assert red < 60 and green < 60, f"status line updated {red:.1f} s / {green:.1f} s after saving"
    assert home_lines == 0, "the home page (nothing to check) has a status line"
    # The published site carries no such line.
    assert "kb-live" not in (built_site / "foundations/mse-conditional-mean/index.html").read_text(encoding="utf-8")


def test_while_serving_the_sidebar_keeps_every_title_after_two_saves(browser, live_site):
    root, base = live_site
    context, pg = watched(browser, base)
    pg.goto(base + "foundations/live/")
    before = pg.evaluate(SIDEBAR)
    assert "MSE 预测条件均值" in " ".join(before), before
    page_file = root / "docs/foundations/live.md"
    original = page_file.read_text(encoding="utf-8")
    for n, text in enumerate(
        [original.replace("本页只为", "第一次保存：本页只为"), original.replace("本页只为", "第二次保存：本页只为")]
    ):
        page_file.write_text(text, encoding="utf-8")
        # livereload brings the rebuilt page
        pg.wait_for_function(
            "(w) => document.querySelector('article') && document.querySelector('article').textContent.includes(w)",
            arg=["第一次保存", "第二次保存"][n],
            timeout=90_000,
        )
    after = pg.evaluate(SIDEBAR)
    pg.screenshot(path=SHOTS / "live-sidebar.png")
    check_and_close(context, pg)
    assert "None" not in after, f"the sidebar after two saves: {after}"
    assert after == before, f"the sidebar changed: {before} -> {after}"


SIDEBAR = """() => Array.from(document.querySelectorAll('.md-sidebar--primary .md-nav__link'))
    .map(e => e.textContent.trim()).filter(Boolean)"""
