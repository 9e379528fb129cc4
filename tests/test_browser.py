"""The built site in a real browser (Debian's Chromium driven by Playwright).

Screenshots are kept in artifacts/screenshots/ as evidence of what was seen.
Without /usr/bin/chromium these tests skip, saying how to enable them; CI sets
KB_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import ROOT

pytestmark = pytest.mark.xdist_group("site")

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = ("Chromium not found at /usr/bin/chromium: install it with "
                   "`sudo apt-get install chromium fonts-noto-cjk` to run the browser tests")
        if os.environ.get("KB_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, served_site):
    """A page that records every request and every JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    pg = context.new_page()
    pg.requests, pg.errors = [], []
    context.on("request", lambda r: pg.requests.append(r.url))  # workers' requests too
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.base = served_site
    yield pg
    foreign = [u for u in pg.requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname != "127.0.0.1"]
    context.close()
    assert not foreign, f"requests left the machine: {foreign[:5]}"
    assert not pg.errors, f"JavaScript errors: {pg.errors[:5]}"


def test_chinese_renders_with_real_glyphs(page):
    page.goto(page.base + "journal/2025/12/31/20251231/")
    page.wait_for_load_state("networkidle")
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
    raw = page.evaluate("() => Array.from(document.querySelectorAll('.arithmatex')).map(e => e.textContent).filter(t => t.includes('$$') || t.includes('\\\\['))")
    assert raw == [], f"unrendered TeX left on the page: {raw[:2]}"


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


def search(page, query: str) -> list[str]:
    page.goto(page.base)
    page.wait_for_load_state("networkidle")  # the search worker has its index
    box = page.locator(".md-search__input")
    box.click()
    box.press_sequentially(query, delay=50)
    for _ in range(3):  # typed before the worker was ready: nudge the query
        try:
            page.wait_for_selector(".md-search-result__item", timeout=5_000)
            break
        except Exception:
            box.press("Space")
            box.press("Backspace")
    return page.eval_on_selector_all(".md-search-result__item a", "els => els.map(e => e.href)")


def test_search_finds_a_chinese_word_inside_a_sentence(page):
    # "熵" only occurs inside longer sentences (熵正则, 加了熵) of the journal.
    hits = search(page, "熵")
    page.screenshot(path=SHOTS / "search-entropy.png")
    assert any("/journal/2025/12/3" in h or "/topics/sac/" in h for h in hits), hits
    # "条件均值" inside the foundations page's sentences
    hits = search(page, "条件均值")
    assert any("/foundations/mse-conditional-mean/" in h for h in hits), hits


def test_mermaid_diagram_renders_offline(page):
    page.goto(page.base + "topics/neoverse/")
    if page.locator(".mermaid").count() == 0:
        pytest.fail("the NeoVerse page has no Mermaid diagram")
    # Material renders the diagram into a closed shadow root: the raw source text
    # disappears from the page and the element takes the diagram's height.
    page.wait_for_function(
        "() => { const e = document.querySelector('.mermaid');"
        " return e && e.textContent.trim() === '' && e.getBoundingClientRect().height > 150; }",
        timeout=15_000,
    )
    page.locator(".mermaid").scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "neoverse-mermaid.png")
