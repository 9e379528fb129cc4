"""Rendering: pure functions from the knowledge model to Markdown.

Nothing here reads files or knows MkDocs: the plugin hands in the model, a
page and its Markdown, and writes what comes back. Every text that comes from
a page or a note (claim titles, question texts, journal excerpts) is escaped
so that it renders as text: no HTML, no link, no attribute list.
"""

from __future__ import annotations

import functools
import html
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from kb import cards, sources
from kb.model import Basis, Claim, CodeLine, JournalRef, KnowledgeBase, Page, Question, Status, Verdict, code_anchor
from kb.project import KbError
from kb.topics import slugify as topic_slug

CATEGORY_SLUG = topic_slug  # the blog's categories_slugify in mkdocs.yml
MATH = r"(?<![\\$])\$(?![\s$])[^$\n]+?(?<![\s\\])\$(?!\$)"
KEPT = re.compile(f"{sources.CODE_SPAN.pattern}|{MATH}")
# Characters that Markdown or an extension could act on, as numeric references:
# they render as themselves and start nothing (no link, emphasis, attribute
# list, list item, heading, table cell, or math delimiter such as `\(`).
ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", **{c: f"&#{ord(c)};" for c in "\\`*_{}[]#+-.!|~^=:"}}
_ENTITY_TABLE = str.maketrans(ENTITIES)  # str.translate: the same replacement, character by character, in C


@dataclass(frozen=True)
class Layout:
    """Where the generated pages live (docs-relative URIs)."""

    claims: str = "claims.md"
    questions: str = "questions.md"
    review: str = "review.md"
    code_dir: str = "code"

    def code(self, path: str) -> str:
        """The generated source page of a snippet file."""
        return f"{self.code_dir}/{path.removesuffix('.py')}.md"

    def source(self, page: Page) -> str:
        """The generated page showing a page's own Markdown (its edit link)."""
        return f"{self.code_dir}/{page.rel}"


# ---- small pieces ------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)  # a list page links to each post many times (one link per question)
def _relative(to_uri: str, from_dir: str) -> str:
    return posixpath.relpath(to_uri, from_dir)


def link(from_uri: str, to_uri: str, anchor: str = "") -> str:
    target = _relative(to_uri, posixpath.dirname(from_uri) or ".")
    return f"{target}#{anchor}" if anchor else target


def _split_math(text: str) -> list[tuple[bool, str]]:
    """Text split into (kept, part): code spans and ``$…$`` math are kept as written."""
    out, last = [], 0
    for m in KEPT.finditer(text):
        out += [(False, text[last : m.start()]), (True, m.group(0))]
        last = m.end()
    return out + [(False, text[last:])]


def md_text(text: str) -> str:
    """Inline Markdown that renders as exactly this text (code spans and ``$…$`` math still render)."""
    out = []
    for is_math, part in _split_math(text):
        if is_math:
            out.append(part)
            continue
        out.append(part.translate(_ENTITY_TABLE))
    return "".join(out)


def code_link(layout: Layout, from_uri: str, code: CodeLine, text: str) -> str:
    return f"[`{text}`]({link(from_uri, layout.code(code.path), code_anchor(code.line))})"


def post_label(post: Page) -> str:
    return f"日志 {post.key}"


# ---- a page's Markdown ------------------------------------------------------------------


def page_markdown(kb: KnowledgeBase, layout: Layout, page: Page, markdown: str) -> str:
    """The Markdown MkDocs renders for a page of the model (the source file is untouched)."""
    lines = markdown.split("\n")
    if lines != page.lines:
        raise KbError(f"{page.rel}: its Markdown was changed before kb rendered it (plugin order in mkdocs.yml)")
    if page.is_post:  # the learner's words: shown as text, code shown and labelled, never run
        lines = _label_code(sources.protect_learner_text(lines, functools.partial(_missing_file, kb, page)))
    lines = _mark_lines(kb, page, lines)
    if page.is_post:
        lines = excerpt_break(sources.scope_labels(sources.normalise_list_indent(lines)))
    else:
        lines = _render_blocks(kb, layout, page, lines)
        lines = _title_includes(kb, layout, page, lines)
        lines = link_citations(lines)
    return "\n".join(lines) + _footer(kb, page, layout)


def _missing_file(kb: KnowledgeBase, page: Page, url: str) -> bool:
    """Whether a relative link on ``page`` names a file that is not in the site (dot files are not)."""
    target = sources.linked_file(url, page.src_uri)
    if target is None:
        return False
    path = kb.project.docs_dir / target
    return not path.is_file() or any(part.startswith(".") for part in target.split("/"))


ARXIV = re.compile(r"(?<![\w/\[.])arXiv:(?P<id>\d{4}\.\d{4,5})(?P<v>v\d+)?(?![\w\]])")
MD_LINK_SPAN = re.compile(r"\[[^\]\n]*\]\([^)\n]*\)|<a\b[^>]*>.*?</a>")


def link_citations(lines: list[str]) -> list[str]:
    """Every ``arXiv:NNNN.NNNNN`` of a page becomes a link to the paper (not inside code or a link)."""
    in_code = sources.fenced(lines)
    out = []
    for line, code in zip(lines, in_code):
        if code or "arXiv:" not in line:
            out.append(line)
            continue
        spans = [m.span() for m in sources.CODE_SPAN.finditer(line)] + [m.span() for m in MD_LINK_SPAN.finditer(line)]

        def cite(m: re.Match) -> str:
            if any(a <= m.start() < b for a, b in spans):
                return m.group(0)
            return f"[{m.group(0)}](https://arxiv.org/abs/{m.group('id')}{m.group('v') or ''})"

        out.append(ARXIV.sub(cite, line))
    return out


EXCERPT_BREAK = "<!-- more -->"  # Material's blog: the index, archive and category pages show what is above it
EXCERPT_LINES = 8


def excerpt_break(lines: list[str]) -> list[str]:
    """Mark where a post's excerpt ends: the first block boundary after a few lines (rendering only).

    A short post, or one that sets its own break, is left whole.
    """
    if any(line.strip() == EXCERPT_BREAK for line in lines):
        return lines
    in_code = sources.fenced(lines)
    seen = 0
    for i, line in enumerate(lines):
        seen += bool(line.strip())
        if (
            seen >= EXCERPT_LINES
            and not line.strip()
            and not in_code[i]
            and i + 1 < len(lines)
            and lines[i + 1].strip()
            and not lines[i + 1].startswith((" ", "\t"))
        ):
            rest = [l for l in lines[i + 1 :] if l.strip()]
            if len(rest) >= 3:
                return lines[: i + 1] + [EXCERPT_BREAK, ""] + lines[i + 1 :]
    return lines


NOT_RUN = "日志原文，未执行"


def _label_code(lines: list[str]) -> list[str]:
    """Title every code block of a post, so the reader knows the suite did not run it."""
    out = list(lines)
    for f in sources.fences(lines):
        if f.info.startswith("{") or "title=" in f.info:
            continue
        lang, _, rest = f.info.partition(" ")
        out[f.start] = f'{f.indent}{f.fence}{lang or "text"} title="{NOT_RUN}"{" " + rest if rest else ""}'
    return out


def _mark_lines(kb: KnowledgeBase, page: Page, lines: list[str]) -> list[str]:
    """Anchors for the questions asked on this page and, in posts, the verdict beside each settled line."""
    extra: dict[int, list[str]] = defaultdict(list)  # file line -> markup appended to it
    for q in kb.questions_by_page.get(page.src_uri, []):
        if q.kind != "admonition":  # admonitions get their anchor with their block
            extra[q.line].append(f'<span id="{q.anchor}" class="kb-anchor"></span>')
    for line, refs in kb.refs_by_line.get(page.src_uri, {}).items():
        if any(ref.kind == "journal" for ref, _ in refs):
            extra[line].append(f'<span id="j-{line}" class="kb-anchor"></span>')
        extra[line] += _markers(page, refs)
    out = list(lines)
    for line, markup in extra.items():
        i = page.index(line)
        text = out[i].rstrip(" ")
        out[i] = f"{text} {' '.join(dict.fromkeys(markup))}{out[i][len(text) :]}"
    return out


def _markers(page: Page, refs: list[tuple[JournalRef, object]]) -> list[str]:
    """One marker per verdict on a line: the verdict, then a link to each claim or answer that settles it.

    Claims on one page share the page's name; the second and later get numbered links.
    """
    groups: dict[tuple[str, Verdict], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for ref, owner in refs:
        groups[(ref.kind, ref.verdict)][owner.page.src_uri].append(owner)
    out = []
    for (kind, verdict), by_page in groups.items():
        prefix = "后来核对" if kind == "journal" else "后来解答"
        links = []
        for owners in by_page.values():
            owners = list(dict.fromkeys(owners))
            for k, owner in enumerate(owners):
                # a Markdown link: MkDocs turns it into the target's URL (posts have blog URLs)
                text = f"「{md_text(owner.page.title)}」" if k == 0 else CIRCLED[min(k, len(CIRCLED) - 1)]
                links.append(f"[{text}]({link(page.src_uri, owner.page.src_uri, owner.anchor)})")
        out.append(f'<span class="kb-marker {verdict.key}">{prefix}：{verdict.label} · {"".join(links)}</span>')
    return out


CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩"


def _render_blocks(kb: KnowledgeBase, layout: Layout, page: Page, lines: list[str]) -> list[str]:
    out = list(lines)
    questions = {q.line: q for q in kb.questions_by_page.get(page.src_uri, []) if q.kind == "admonition"}
    blocks = [*page.claims, *page.answers]
    by_line = {b.line: b for b in blocks}
    for raw in sorted(sources.parse_blocks(page.lines, page.doc.body_line), key=lambda b: -b.line):
        owner = by_line.get(raw.line)
        inner = raw.indent + "    "
        body = lines[raw.body_start : raw.end]
        if raw.kind == "claim" and owner is not None:
            header = f'!!! claim {owner.status.key} "{owner.status.label}：{md_text(owner.title)}"'
            meta, anchor = _claim_meta(kb, layout, page, owner), owner.anchor
        elif raw.kind == "answer" and owner is not None:
            header = f'!!! answer "解答：{md_text(owner.title)}"'
            meta, anchor = _answer_meta(layout, page, owner), owner.anchor
        elif raw.kind == "question" and raw.line in questions:
            header = f'{raw.marker} question "{md_text(raw.title)}"'
            meta, anchor = "", questions[raw.line].anchor
        else:  # pragma: no cover - the model refuses what it cannot place
            continue
        new = [header, *body]
        if raw.kind == "claim" and owner is not None:
            for extra in _claim_facts(layout, page, owner):
                new += ["", inner + extra]
        if meta:
            new += ["", inner + meta]
        out[raw.start : raw.end] = [f'<div class="kb-block" id="{anchor}" markdown>', "", *new, "", "</div>"]
    return out


def _claim_meta(kb: KnowledgeBase, layout: Layout, page: Page, claim: Claim) -> str:
    src = page.src_uri
    parts = []
    if claim.test:
        parts.append(f"判定测试 {code_link(layout, src, claim.test.code, claim.test.function)}")
    elif claim.missing:
        parts.append(f"尚缺：{md_text(claim.missing)}")
    for e in claim.evidence:
        parts.append(f"证据 {code_link(layout, src, e, f'{e.path}:{e.name}' if e.name else e.path)}")
    parts += _journal_links(src, claim.refs)
    parts.append(f"[全部论断]({link(src, layout.claims)})")
    return '<small class="kb-meta">' + " · ".join(parts) + "</small>"


def _claim_facts(layout: Layout, page: Page, claim: Claim) -> list[str]:
    """What decides the verdict, visibly: its basis, the counterfactuals its test must reject,
    the sentences of the sources it rests on, and its second reading."""
    out = []
    if claim.basis is not Basis.EXPERIMENT:
        out.append(
            f'<small class="kb-basis {claim.basis.key}"><strong>依据：{claim.basis.label}</strong>——'
            f"{html_text(claim.basis.meaning)}</small>"
        )
    for cf in claim.counterfactuals:
        test = code_link(layout, page.src_uri, claim.test.code, f"{claim.test.function}({cf.kwargs})")
        out.append(
            f'<small class="kb-counterfactual" title="make test 在这个设定下运行判定测试，要求它的断言失败">'
            f"反事实 {cf.index}：{md_text(cf.text)}，判定测试会失败（{test}）</small>"
        )
    for q in claim.quotes:
        out.append(f'<small class="kb-quote">原文（{md_text(q.source)}）：“{md_text(q.text)}”</small>')
    last = claim.last_review
    if last is None:
        review_text = "尚无第二读者复核"
    elif claim.review_current:
        review_text = f"第二读者复核：{last.date.isoformat()}（{md_text(last.reviewer)}）"
    else:
        review_text = f"复核于 {last.date.isoformat()}，之后论断或测试有改动：尚未重新复核"
    out.append(f'<small class="kb-review-state {"current" if claim.review_current else "stale"}">{review_text}</small>')
    return out


def _answer_meta(layout: Layout, page: Page, answer) -> str:
    parts = _journal_links(page.src_uri, answer.refs) + [f"[全部问题]({link(page.src_uri, layout.questions)})"]
    return '<small class="kb-meta">' + " · ".join(parts) + "</small>"


def _journal_links(src: str, refs: list[JournalRef]) -> list[str]:
    label = {"journal": "日志原话", "answers": "回答的问题"}
    return [f"{label[r.kind]} [{r.post.key}（{r.verdict.label}）]({link(src, r.post.src_uri, r.anchor)})" for r in refs]


def _title_includes(kb: KnowledgeBase, layout: Layout, page: Page, lines: list[str]) -> list[str]:
    """Title an include fence with its file and section, linked to the source page."""
    out = list(lines)
    for f in reversed(sources.fences(lines)):
        if f.info != "python" or f.end - f.start != 2:
            continue
        m = sources.SNIPPET_LINE.match(lines[f.start + 1])
        if not m or m.group("escape") or not m.group("snippet"):
            continue
        target = m.group("snippet")[1:-1]
        path, section = sources.split_target(target)
        line = kb.section_line(path, section) if section else 1
        out[f.start] = f'{f.indent}{f.fence}python title="{target}"'
        href = link(page.src_uri, layout.code(path), code_anchor(line))
        out[f.end + 1 : f.end + 1] = [
            "",
            f'{f.indent}<small class="kb-source">[源码：`{path}`（由测试执行）]({href})</small>',
        ]
    return out


def _footer(kb: KnowledgeBase, page: Page, layout: Layout) -> str:
    src = page.src_uri
    topics = kb.topic_pages
    n_cards = sum(c.topic == page.section for c in cards.cards(kb)) if not page.is_post else 0
    review_link = (
        f'\n\n<small class="kb-related">复习这个主题：[{n_cards} 张卡片]'
        f'({link(src, layout.review, topic_anchor(page.section))})（`kb review --topic "{page.section}"`）</small>\n'
        if n_cards and (page.topic or page.src_uri.startswith("foundations/"))
        else ""
    )
    if page.is_post:
        cats = [c for c in page.categories if c in topics]
        if not cats:
            return ""
        links = "、".join(f"[{md_text(topics[c].title)}]({link(src, topics[c].src_uri)})" for c in cats)
        return f'\n\n---\n\n<small class="kb-related">相关主题页：{links}</small>\n'
    posts = kb.posts_by_topic.get(page.topic or "", [])
    if not posts:
        return f"\n\n---{review_link}" if review_link else ""
    cat_uri = f"{kb.project.blog_dir}/category/{CATEGORY_SLUG(page.topic, '-')}.md"
    post_links = "、".join(f"[{p.key}]({link(src, p.src_uri)})" for p in posts)
    return (
        f'\n\n---\n\n<small class="kb-related">日志中的相关笔记：{post_links}'
        f"（[{md_text(page.topic)} 分类下的全部日志]({link(src, cat_uri)})）</small>\n" + review_link
    )


def topic_anchor(topic: str) -> str:
    return CATEGORY_SLUG(topic, "-") or "topic"


# ---- generated pages --------------------------------------------------------------------


def code_page(kb: KnowledgeBase, layout: Layout, path: str, code: str) -> str:
    """The source page of a snippet file, with line anchors for the evidence links."""
    uri = layout.code(path)
    users = kb.pages_citing.get(path, [])
    used = "、".join(f"[{md_text(p.title)}]({link(uri, p.src_uri)})" for p in users)
    return (
        f"---\ntitle: {path}\nsearch:\n  exclude: true\n---\n\n"
        f"# `{path}`\n\n"
        f"测试套件运行本文件（`pytest {path}`）及其中每个 `test_*` 函数。"
        + (f"引用它的页面：{used}。" if used else "")
        + "\n\n"
        + _fenced(code, "python")
    )


def _fenced(code: str, lang: str) -> str:
    # Escape snippet markers so pymdownx.snippets shows them instead of acting on them.
    code = re.sub(r"(?m)^([ \t]*)(# )?(-+8<-+)", r"\1\2;\3", code)
    fence = "`" * max(4, 1 + max((len(m) for m in re.findall(r"`+", code)), default=0))
    return f'{fence}{lang} linenums="1"\n{code}{"" if code.endswith(chr(10)) else chr(10)}{fence}\n'


def source_page(layout: Layout, page: Page, text: str) -> str:
    """A page's Markdown source, where its edit link leads when the project has no repository URL."""
    uri = layout.source(page)
    if page.is_post:
        how = (
            f'这是日志原文，不要改动已有的文字。要补充，用 `kb new --date {page.date.isoformat()} -m "…"`'
            "（或 `--edit` 在编辑器里写），它会在文末加一节。"
        )
    else:
        how = (
            f"在编辑器里修改 `{page.rel}`。`make serve` 运行时，保存后页面自动刷新，"
            f"页面顶部的状态行显示本页的检查（`kb check {page.rel}`）是否通过。"
        )
    return (
        f"---\ntitle: {page.rel}\nsearch:\n  exclude: true\n---\n\n# `{page.rel}`\n\n"
        f"[{md_text(page.title)}]({link(uri, page.src_uri)}) 的源文件。{how}\n\n" + _fenced(text, "markdown")
    )


def _section_order(kb: KnowledgeBase) -> list[str]:
    by = {c.page.section for c in kb.claims}
    order = ["基础", *kb.project.allowed_topics]
    return sorted(by, key=lambda t: (order.index(t) if t in order else len(order), t))


def _verdict_counts(claim: Claim) -> str:
    if not claim.refs:
        return ""
    counts = Counter(r.verdict for r in claim.refs)
    chips = "".join(
        f'<span class="kb-chip {v.key}" title="{v.label}">{v.label} {counts[v]}</span>' for v in Verdict if counts[v]
    )
    return f'<span class="kb-journal-count">日志</span>{chips}'


FILTERS = (  # (id, label, statuses shown)
    ("all", "全部", tuple(Status)),
    ("wrong", "证伪与部分成立", (Status.REFUTED, Status.QUALIFIED)),
    ("verified", "已验证", (Status.VERIFIED,)),
    ("open", "待解决", (Status.OPEN,)),
)
STATUS_ORDER = (Status.REFUTED, Status.QUALIFIED, Status.OPEN, Status.VERIFIED)


def inline_html(text: str) -> str:
    """HTML showing this text, with its ``$…$`` math left for KaTeX (as arithmatex would)."""
    out = []
    for kept, part in _split_math(text):
        if kept and part.startswith("$"):
            out.append(f'<span class="arithmatex">\\({html_text(part[1:-1])}\\)</span>')
        elif kept:
            out.append(f"<code>{html_text(part.strip('`'))}</code>")
        else:
            out.append(html_text(part))
    return "".join(out)


def _review_facts(c: Claim) -> str:
    parts = []
    if c.basis is not Basis.EXPERIMENT:
        parts.append(
            f'<span class="kb-basis {c.basis.key}" title="{html_text(c.basis.meaning)}">{c.basis.label}</span>'
        )
    if c.counterfactuals:
        titles = "；".join(f"{cf.index}. {cf.text}" for cf in c.counterfactuals)
        parts.append(f'<span class="kb-cf-count" title="{html_text(titles)}">反事实 {len(c.counterfactuals)}</span>')
    last = c.last_review
    if last is None:
        parts.append('<span class="kb-review-state stale">未复核</span>')
    else:
        state = "current" if c.review_current else "stale"
        label = f"复核 {last.date.isoformat()}" + ("" if c.review_current else "（改动后未重读）")
        parts.append(f'<span class="kb-review-state {state}" title="{html_text(last.found)}">{label}</span>')
    return "".join(f'<span class="kb-fact"> · {p}</span>' for p in parts)


def _long_card_answers(kb: KnowledgeBase, href_to: Callable[..., str], uri: str) -> list[str]:
    """The claims whose review card's short answer is over the limit (cut): each wants a `review:` line."""
    by_id = {c.id: c for c in kb.claims}
    long = [
        by_id[card.id.removeprefix("claim:")]
        for card in cards.cards(kb)
        if card.over_limit and card.id.removeprefix("claim:") in by_id
    ]
    if not long:  # said in the page's info box instead (the page stays short on a phone)
        return []
    head = f'??? warning "复习卡片的短答案超过 {cards.ANSWER_LIMIT} 字的论断 {len(long)} 条"'
    body = [
        f"    - [{md_text(c.title)}]({link(uri, c.page.src_uri, c.anchor)})（`{c.where}`）：给它加一行 `review:`"
        for c in long
    ]
    return [head, "", *body, ""]


# The generated lists repeat what the pages say: in search they come after the pages that explain
# (Material's per-page boost; 1 is a page's own weight), so that they do not crowd the first results.
LIST_SEARCH = ("search:", "  boost: 0.05")


def claims_page(kb: KnowledgeBase, layout: Layout, href_to: Callable[..., str]) -> str:
    """Every claim in one compact table, refuted and qualified first, filterable by status (no script).

    ``href_to(from_uri, to_uri, anchor="")`` links one source's URL to another's (the site's URLs):
    raw HTML is not rewritten by MkDocs.
    """
    uri = layout.claims
    total = Counter(c.status for c in kb.claims)
    order = _section_order(kb)
    claims = sorted(kb.claims, key=lambda c: (STATUS_ORDER.index(c.status), order.index(c.page.section), c.where))
    radios, labels = [], []
    for key, label, statuses in FILTERS:
        n = sum(total[s] for s in statuses)
        radios.append(
            f'<input type="radio" name="kb-filter" id="kb-filter-{key}" class="kb-filter"'
            f"{' checked' if key == 'all' else ''}>"
        )
        labels.append(f'<label for="kb-filter-{key}">{label} {n}</label>')
    rows = []
    for c in claims:
        page = href_to(uri, c.page.src_uri)
        test = (
            (
                f'<a class="kb-test" href="{html_text(href_to(uri, layout.code(c.test.code.path), code_anchor(c.test.code.line)))}" '
                f'title="判定测试 {html_text(c.test.node_id)}">测试</a>'
            )
            if c.test
            else f'<span class="kb-test" title="{html_text(c.missing or "")}">尚缺测试</span>'
        )
        rows.append(
            f'<tr data-status="{c.status.key}"><td><span class="kb-status {c.status.key}">{c.status.label}</span></td>'
            f'<td><a href="{html_text(href_to(uri, c.page.src_uri, c.anchor))}">{inline_html(c.title)}</a>'
            f'<div class="kb-claim-meta"><span class="kb-status-text">{c.status.label}</span>'
            f'<a href="{html_text(page)}">{html_text(c.page.section)}</a> · {test}'
            f"{_verdict_counts(c)}{_review_facts(c)}</div></td></tr>"
        )
    by_topic = defaultdict(Counter)
    for c in kb.claims:
        by_topic[c.page.section][c.status] += 1
    summary = "；".join(f"{html_text(t)} " + "/".join(str(by_topic[t][s]) for s in Status) for t in order)
    return "\n".join(
        [
            "---",
            "title: 论断",
            *LIST_SEARCH,
            "---",
            "",
            "# 论断",
            "",
            f"共 **{len(kb.claims)}** 条论断，状态由判定测试决定：测试失败、被跳过或根本没有运行时，`make test` 失败并报出论断的名字。",
            "",
            '??? info "状态与“日志”的含义，按主题的统计"',
            "    **已验证**：测试断言这句话成立。**已证伪**：测试断言它的反例。**部分成立**：测试同时断言成立的部分和不成立的部分。"
            "**待解决**：写明还缺什么。每条论断下的“日志”是它核对过的日志原话，以及每句原话得到的判定"
            "（一句原话的判定可以和论断不同：一条已验证的论断，可以证伪学习者写下的某句话）。",
            "",
            "    **反事实**：一条已验证或已证伪的论断写明至少一个“若……”的设定，在那个设定下论断不成立（或反过来成立）；"
            "`make test` 用这个设定再运行判定测试，要求测试自己的断言失败（崩溃不算），否则报出论断的名字。"
            "**复核**：每条论断都由没写它的第二读者对照原文读过；论断或测试改动后显示为“改动后未重读”。"
            f"**复习卡片**：短答案取自论断说明的第一句或论断的 `review:` 行，不超过 {cards.ANSWER_LIMIT} 字"
            "（超过的论断列在本页开头）。",
            "",
            f"    反事实 {sum(len(c.counterfactuals) for c in kb.claims)} 个，覆盖 "
            f"{sum(bool(c.counterfactuals) for c in kb.claims)} 条论断；"
            f"复核为当前的 {sum(c.review_current for c in kb.claims)} 条；"
            + "，".join(f"{b.label} {sum(c.basis is b for c in kb.claims)}" for b in Basis)
            + "。",
            "",
            "    合计："
            + "，".join(f"{s.label} {total[s]}" for s in Status)
            + f"。按主题（{'/'.join(s.label for s in Status)}）：{summary}。",
            "",
            *_long_card_answers(kb, href_to, uri),
            '<div class="kb-claims">',
            *radios,
            f'<div class="kb-filters" role="group" aria-label="按状态筛选">{"".join(labels)}</div>',
            '<table class="kb-claims-table"><thead><tr><th>状态</th><th>论断</th></tr></thead><tbody>',
            *rows,
            "</tbody></table>",
            "</div>",
            "",
        ]
    )


def questions_page(kb: KnowledgeBase, layout: Layout) -> str:
    uri = layout.questions
    qs = kb.questions
    open_qs = [q for q in qs if not q.answered]
    done = [q for q in qs if q.answered]
    out = [
        "---",
        "title: 问题",
        *LIST_SEARCH,
        "---",
        "",
        "# 问题",
        "",
        "日志里以问自己问题的方式学习：这里汇总所有问题、中断时的重启点（`>>`）、未勾选的任务和主题页里的问题框，"
        "每条都链接到提出它的地方；已解答的问题链接到回答它的论断或小节。终端里用 `kb questions` 列出待解决的问题（带 `file:line`）。",
        "",
        f"共 **{len(qs)}** 个问题：待解决 **{len(open_qs)}**，已解答 **{len(done)}**。",
    ]

    def name(page: Page) -> str:
        return post_label(page) if page.is_post else md_text(page.title)

    def where(q: Question) -> str:
        return f"[{name(q.page)}]({link(uri, q.page.src_uri, q.anchor)})"

    def grouped(items: list[Question], render) -> list[str]:
        groups: dict[str, list[Question]] = defaultdict(list)
        for q in items:
            groups[q.page.src_uri].append(q)
        lines = []
        for group in groups.values():
            lines += ["", f"### {name(group[0].page)}", "", *(render(q) for q in group)]
        return lines

    def answered(q: Question) -> str:
        if not q.answered_by:
            return f"- {md_text(q.text)}（{where(q)}，已勾选）"
        answers = "；".join(
            f"[{md_text(b.title)}]({link(uri, b.page.src_uri, b.anchor)})"
            + (f' <span class="kb-status {b.status.key}">{b.status.label}</span>' if isinstance(b, Claim) else "")
            for b in q.answered_by
        )
        return f"- {md_text(q.text)}（{where(q)}）→ {answers}"

    out += ["", "## 待解决", ""]
    out += grouped(open_qs, lambda q: f"- {md_text(q.text)}（{where(q)}）") if open_qs else ["没有待解决的问题。"]
    out += ["", "## 已解答", ""]
    out += grouped(done, answered) if done else ["还没有已解答的问题。"]
    return "\n".join(out) + "\n"


def html_text(text: str) -> str:
    """HTML that shows exactly this text (for raw-HTML parts of generated pages)."""
    return html.escape(text, quote=True)


# ---- search ---------------------------------------------------------------------------------------

# \[…\], \(…\) (pages), $$…$$ and $…$ (notebook prose keeps them as typed)
TEX = re.compile(r"\\\[(.*?)\\\]|\\\((.*?)\\\)|\$\$(.*?)\$\$|(?<![\\$])\$(?![\s$])([^$\n]+?)(?<![\s\\])\$(?!\$)", re.S)


@functools.cache
def _latex2text():
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text(math_mode="text", strict_latex_spaces=True)


@functools.lru_cache(maxsize=8192)  # a post's formula is indexed again in each list page showing its excerpt
def tex_text(tex: str) -> str:
    """A formula as plain Unicode text (pylatexenc): ``\\pi_\\theta(a|s)`` reads ``π_θ(a|s)``."""
    try:
        text = _latex2text().latex_to_text(html.unescape(tex))
    except Exception:  # noqa: BLE001 - a formula pylatexenc cannot read is shown as written
        text = tex
    return html.escape(re.sub(r"\s+", " ", text).strip(), quote=False)


SPACES = re.compile(r"[ \t]{2,}")


def _tex_as_text(m: re.Match) -> str:
    return " " + tex_text(next(g for g in m.groups() if g is not None)) + " "


def search_text(text: str) -> str:
    """A search entry without raw TeX: result teasers show the formula as text, not ``\\(\\pi_\\theta\\)``."""
    if "\\" in text or "$" in text:  # every formula TEX finds starts with a backslash or a dollar
        text = TEX.sub(_tex_as_text, text)
    return SPACES.sub(" ", text)


# ---- live status (kb serve only) ---------------------------------------------------------------------

LIVE_SCRIPT = """<script>
(function () {
  const line = document.currentScript.previousElementSibling;
  // Built with text nodes only: what the status file says (a claim's sentence, a reason) is never HTML.
  const show = (state, ...parts) => {
    line.dataset.state = state;
    line.replaceChildren(...parts.map(p => typeof p === "string" ? document.createTextNode(p) : p));
  };
  const linkTo = (anchor, text) => {
    const a = document.createElement("a");
    a.href = "#" + anchor; a.textContent = text;
    return a;
  };
  async function poll() {
    try {
      const response = await fetch(line.dataset.status, {cache: "no-store"});
      const got = response.ok ? JSON.parse((await response.text()) || "{}") : {};
      const all = got && typeof got === "object" && !Array.isArray(got) ? got : {};
      const s = all[line.dataset.page];
      // The build's problems (kb serve): those of no page (the review log, a snippet file, a page
      // that cannot be read) on every page; a page's own until its check has run (which reports them).
      const builds = Array.isArray(all._build) ? all._build : [];
      const general = builds.filter(b => b && !b.page);
      const own = (s && typeof s === "object") ? [] : builds.filter(b => b && b.page === line.dataset.page);
      const built = general.length ? general : own;
      if (built.length) show("failed", "✗ 构建问题：" + built[0].problem + (built.length > 1 ? `（另有 ${built.length - 1} 处）` : ""));
      else if (!s || typeof s !== "object") show("none", "本页的检查还没有运行：保存本页（或它引用的代码）后自动运行。");
      else if (s.running && typeof s.passed !== "boolean") show("running", "正在检查本页…" + (s.ran_at ? `（上次 ${s.ran_at}）` : ""));
      else if (s.passed && !s.running) show("passed", `✓ 本页的检查全部通过 · ${s.ran_at}（${s.seconds} s）`);
      else {
        // A finished check that failed; or one still running that has already found a problem (kb check
        // validates the page before its tests run): that verdict is final, shown at once.
        const failures = Array.isArray(s.failures) ? s.failures.filter(f => f && typeof f === "object") : [];
        const more = (n) => n > 1 ? `（另有 ${n - 1} 条）` : "";
        const [state, head, tail] = ["failed", "✗ 未通过：", s.running ? " · 其余部分仍在检查…" : ` · ${s.ran_at}`];
        if (failures.length) {
          const f = failures[0];
          show(state, head + "论断「", linkTo(String(f.anchor || ""), String(f.title || f.id)), "」：",
               String(f.reason || "见终端") + more(failures.length) + tail);
        } else {
          const what = (s.problems || [])[0] || (s.failed_tests || [])[0] || "见终端";
          show(state, head + what + tail);
        }
      }
    } catch (e) { show("none", "读不到检查状态（kb serve 没在运行？）"); }
  }
  poll();
  setInterval(poll, 500);
})();
</script>"""


def live_status(page: Page, status_url: str) -> str:
    """The status line `kb serve` shows on a page: when its checks last ran, and whether they passed."""
    return (
        f'<div class="kb-live" data-page="{html_text(page.src_uri)}" data-status="{html_text(status_url)}" '
        f'data-state="none">本页的检查状态</div>\n{LIVE_SCRIPT}\n\n'
    )


# ---- the review page -----------------------------------------------------------------------------

DOCS_LINK = re.compile(r"(\]\()/([^)\s]+)")


def review_page(kb: KnowledgeBase, layout: Layout, states: dict, now) -> str:
    """The published 复习 page: a dated, read-only snapshot of every card by topic, the back folded away
    (``kb serve`` shows a live session instead: ``kb.review_server.session_page``)."""
    uri = layout.review
    deck = cards.cards(kb)
    due_now = {s.card.id for s in states.values() if s.due <= now}
    by_topic: dict[str, list] = defaultdict(list)
    for c in deck:
        by_topic[c.topic].append(c)
    order = ["基础", *kb.project.allowed_topics]
    out = [
        "---",
        "title: 复习",
        "search:",
        "  exclude: true",
        "---",
        "",
        "# 复习",
        "",
        f'<p class="kb-snapshot">快照：{now.strftime("%Y-%m-%d")}（构建本站时的卡片与到期数，只读；'
        "在 <code>kb serve</code> 下打开本页，就在浏览器里复习并评分）</p>",
        "",
        f"日志里的问题（有解答的）和每一条论断都是一张卡片：共 **{len(deck)}** 张，"
        f"构建本站时（{now.strftime('%Y-%m-%d %H:%M')} UTC）到期 **{len(due_now)}** 张。"
        "终端里运行 `kb review`，按 FSRS 安排复习：先看正面，回想，再看背面并评分；"
        "`kb review --stats` 显示每个主题的卡片数和未来 7 天的到期预报，`kb export anki cards.apkg` 导出到 Anki。"
        "论断的状态或内容改变后，它的卡片会重新到期。",
        "",
    ]
    for topic in sorted(by_topic, key=lambda t: (order.index(t) if t in order else len(order), t)):
        cs = by_topic[topic]
        out += [
            f"## {md_text(topic)} {{#{topic_anchor(topic)}}}",
            "",
            f"{len(cs)} 张卡片，构建时到期 {sum(c.id in due_now for c in cs)} 张。",
            "",
        ]
        for c in cs:
            back = DOCS_LINK.sub(lambda m: m.group(1) + link(uri, m.group(2)), c.back)
            body = [*back.split("\n"), "", f"[查看原文]({link(uri, c.page, c.anchor)})"]
            tag = "论断" if c.id.startswith("claim:") else "问题"
            out += (
                [f'??? question "{tag}：{md_text(c.front)}"'] + [f"    {line}" if line else "" for line in body] + [""]
            )
    return "\n".join(out) + "\n"
