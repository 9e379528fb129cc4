"""MkDocs plugin: claims, questions, evidence links and journal cross-links.

- validates every claim and answer block, failing the build with file:line;
- renders claims with their status, the deciding test and the evidence;
- marks journal sentences that a claim later checked, without changing them;
- generates the claims page, the questions page and one source page per snippet
  file (with line anchors, so evidence is one click away);
- links topic pages to their journal category and posts to their topic pages;
- puts the vendored KaTeX / Mermaid in place (fetched from npm if missing).
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
from collections import Counter, defaultdict
from pathlib import Path

from mkdocs.config import config_options as c
from mkdocs.config.base import Config
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, event_priority
from mkdocs.structure.files import File, Files
from pymdownx.slugs import slugify

from kb import vendor
from kb.blocks import STATUSES, Block, fenced_lines, parse_blocks, parse_ref
from kb.knowledge import STATUS_LABELS, KnowledgeBase, Page, python_functions, section_line
from kb.project import ROOT, SNIPPETS, allowed_topics

INCLUDE = re.compile(r'^[ ]*--8<--[ ]+"(?P<target>[^"]+)"[ ]*$')
HTML_ID = re.compile(r'\bid="([^"]+)"')
FENCE_OPEN = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,})python[ ]*$")
CATEGORY_SLUG = slugify(case="lower")


LIST_MARKER = re.compile(r"^(?P<indent>[ ]*)(?P<marker>[-*+]|(?P<num>\d+)\.)[ ]+")


def normalise_list_indent(lines: list[str]) -> list[str]:
    """Re-indent GitHub-style nested list items for Python-Markdown (rendering only).

    The learner nests items by 2-3 spaces (GitHub renders that); Python-Markdown
    needs 4. An item numbered n+1 under an item numbered n is a sibling that was
    indented by accident, as GitHub shows it: it joins its sibling's level.
    """
    out: list[str] = []
    stack: list[tuple[int, int, str | None]] = []  # (original indent, new indent, number)
    for line in lines:
        m = LIST_MARKER.match(line)
        if not m:
            if not line.strip():
                pass
            elif len(line) - len(line.lstrip(" ")) == 0:
                stack = []
            out.append(line)
            continue
        indent, num = len(m.group("indent")), m.group("num")
        while stack and stack[-1][0] > indent:
            stack.pop()
        if stack and stack[-1][0] == indent:
            new = stack.pop()[1]
        elif stack and num and stack[-1][2] and int(num) == int(stack[-1][2]) + 1:
            new = stack.pop()[1]  # "1. a" then "   2. b": siblings
        elif stack:
            new = stack[-1][1] + 4
        else:
            new = 0
        stack.append((indent, new, num))
        out.append(" " * new + line[indent:])
    return out


class KbConfig(Config):
    claims_page = c.Type(str, default="claims.md")
    questions_page = c.Type(str, default="questions.md")
    code_dir = c.Type(str, default="code")


def code_uri(code_dir: str, snippet_path: str) -> str:
    """docs-relative URI of the generated source page of a snippet file."""
    return f"{code_dir}/{snippet_path.removesuffix('.py')}.md"


def link(from_uri: str, to_uri: str, anchor: str = "") -> str:
    target = posixpath.relpath(to_uri, posixpath.dirname(from_uri) or ".")
    return f"{target}#{anchor}" if anchor else target


def figure_uri(notebook_uri: str, k: int) -> str:
    """`topics/dpo_toy.ipynb`, 1 -> `topics/dpo_toy.figure-1.png` (k counts figures from 1)."""
    return f"{notebook_uri.removesuffix('.ipynb')}.figure-{k}.png"


def notebook_figures(path: str) -> list[bytes]:
    """The PNG outputs of a committed, executed notebook, in order.

    Topic pages embed them (`![...](dpo_toy.figure-1.png)`), so a figure is shown
    where it is discussed and still comes from code the test suite executes.
    """
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        base64.b64decode(out["data"]["image/png"])
        for cell in nb.get("cells", []) if cell.get("cell_type") == "code"
        for out in cell.get("outputs", []) if "image/png" in out.get("data", {})
    ]


def line_anchor(line: int) -> str:
    return f"__codelineno-0-{line}"


class KnowledgeBasePlugin(BasePlugin[KbConfig]):
    kb: KnowledgeBase

    # ---- set-up ----------------------------------------------------------
    def on_config(self, config):
        docs = config.docs_dir
        if not vendor.is_installed(docs):
            try:
                vendor.install(docs)
            except OSError as e:  # no registry: say what to do
                raise PluginError(f"kb: cannot fetch KaTeX/Mermaid ({e}); run `kb assets` online once") from e
        return config

    def on_serve(self, server, config, builder):
        server.watch(str(SNIPPETS))
        return server

    @event_priority(50)
    def on_files(self, files: Files, config):
        self.kb = KnowledgeBase()
        errors = self.kb.errors()
        if errors:
            raise PluginError("kb: invalid claims or answers:\n  " + "\n  ".join(errors))
        cfg = self.config
        self.topic_pages = self._topic_pages()
        for path in sorted(SNIPPETS.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel_path = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, code_uri(cfg.code_dir, rel_path), content=self._code_page(rel_path)))
        for nb in [f for f in files if f.src_uri.endswith(".ipynb")]:
            for k, png in enumerate(notebook_figures(nb.abs_src_path), 1):
                files.append(File.generated(config, figure_uri(nb.src_uri, k), content=png))
        files.append(File.generated(config, cfg.claims_page, content=self._claims_page()))
        files.append(File.generated(config, cfg.questions_page, content=self._questions_page()))
        return files

    def _topic_pages(self) -> dict[str, Page]:
        """The main page of each topic: its index page if it has one, else its first page."""
        pages: dict[str, Page] = {}
        for page in self.kb.pages:
            topic = page.meta.get("topic")
            if topic and (topic not in pages or page.path.name == "index.md"):
                pages[topic] = page
        return pages

    # ---- pages -----------------------------------------------------------
    @event_priority(50)
    def on_page_markdown(self, markdown, page, config, files):
        src = page.file.src_uri
        source = next((p for p in self.kb.pages if p.src_uri == src), None)
        if source is None:
            return markdown
        lines = markdown.split("\n")
        offset = len(source.lines) - len(lines)  # front matter stripped by MkDocs
        lines = self._mark_lines(lines, source, offset)
        if source.is_post:
            lines = normalise_list_indent(lines)
        lines = self._render_blocks(lines, source, offset)
        lines = self._title_includes(lines, src)
        markdown = "\n".join(lines)
        return markdown + self._footer(source)

    def _render_blocks(self, lines: list[str], source: Page, offset: int) -> list[str]:
        src = source.src_uri
        out = list(lines)
        for block in reversed(parse_blocks("\n".join(lines), source.path)):
            original = next(b for b in self.kb.blocks if b.path == source.path and b.line == block.line + offset)
            anchor = self.kb.anchor(original)
            inner = block.indent + "    "
            body = lines[block.body_start:block.end]
            if block.kind == "claim":
                status = block.get("status")
                header = f'{block.indent}!!! claim {status} "{STATUS_LABELS[status]}：{block.title}"'
                meta = self._claim_meta(block, src)
            elif block.kind == "answer":
                header = f'{block.indent}!!! answer "解答：{block.title}"'
                meta = self._answer_meta(block, src)
            else:  # question: keep the admonition, give it an anchor
                marker = "???" if lines[block.start].lstrip().startswith("???") else "!!!"
                header = f'{block.indent}{marker} question "{block.title}"'
                meta = ""
                anchor = f"q-{block.line + offset}"
            new = [header, *body]
            if meta:
                new += ["", inner + meta]
            if block.indent:
                new = [f'{block.indent}<span id="{anchor}" class="kb-anchor"></span>', "", *new]
            else:
                new = [f'<div class="kb-block" id="{anchor}" markdown>', "", *new, "", "</div>"]
            out[block.start:block.end] = new
        return out

    def _claim_meta(self, block: Block, src: str) -> str:
        parts = []
        test = block.get("test")
        if test:
            path, func = self.kb.test_target(test)
            rel_path = path.relative_to(ROOT).as_posix()
            line = python_functions(path)[func]
            parts.append(f"判定测试 [`{func}`]({link(src, code_uri(self.config.code_dir, rel_path), line_anchor(line))})")
        elif block.get("missing"):
            parts.append(f"尚缺：{block.get('missing')}")
        for f in block.all("evidence"):
            path, _, section = f.value.partition(":")
            line = section_line(ROOT / path, section) if section else 1
            parts.append(f"证据 [`{f.value}`]({link(src, code_uri(self.config.code_dir, path), line_anchor(line))})")
        parts += self._journal_links(block, src)
        parts.append(f"[全部论断]({link(src, self.config.claims_page)})")
        return '<small class="kb-meta">' + " · ".join(parts) + "</small>"

    def _answer_meta(self, block: Block, src: str) -> str:
        parts = self._journal_links(block, src) + [f"[全部问题]({link(src, self.config.questions_page)})"]
        return '<small class="kb-meta">' + " · ".join(parts) + "</small>"

    def _journal_links(self, block: Block, src: str) -> list[str]:
        parts = []
        for key, label in (("journal", "日志原话"), ("answers", "回答的问题")):
            for f in block.all(key):
                post_key, fragment = parse_ref(f.value)
                line, _ = self.kb.find_line(post_key, fragment)
                post = self.kb.posts[post_key]
                parts.append(f"{label} [{post_key}]({link(src, post.src_uri, f'q-{line}' if key == 'answers' else f'j-{line}')})")
        return parts

    def _mark_lines(self, lines: list[str], source: Page, offset: int) -> list[str]:
        """Anchors for questions asked on this page, and, in journal posts, markers
        beside the learner's lines that a claim later checked or answered.

        Only rendering changes: the learner's words and the source file stay as they are.
        """
        src = source.src_uri
        extra: dict[int, list[str]] = defaultdict(list)  # file line -> markup to append
        for q in self.kb.questions:
            if q.page is not source or q.kind == "admonition":  # admonitions get their anchor in _render_blocks
                continue
            extra[q.line].append(f'<span id="{q.anchor}" class="kb-anchor"></span>')
            for b in q.answered_by:
                page = self.kb.page_of(b)
                href = link(src, page.src_uri, self.kb.anchor(b))
                extra[q.line].append(f"[后来解答：见「{page.title}」]({href}){{ .kb-marker .answered }}")
        for b in self.kb.claims if source.is_post else []:
            for f in b.all("journal"):
                post_key, fragment = parse_ref(f.value)
                if post_key != source.post_key:
                    continue
                line, _ = self.kb.find_line(post_key, fragment)
                page = self.kb.page_of(b)
                status = b.get("status")
                href = link(src, page.src_uri, self.kb.anchor(b))
                extra[line].append(f'<span id="j-{line}" class="kb-anchor"></span>')
                extra[line].append(f"[后来核对：{STATUS_LABELS[status]}，见「{page.title}」]({href}){{ .kb-marker .{status} }}")
        out = list(lines)
        for file_line, markup in extra.items():
            i = file_line - 1 - offset
            text = out[i].rstrip(" ")
            trailing = out[i][len(text):]
            out[i] = f"{text} {' '.join(dict.fromkeys(markup))}{trailing}"
        return out

    def _title_includes(self, lines: list[str], src: str) -> list[str]:
        """Title an include fence with its file and section, linked to the source page."""
        in_code = fenced_lines(lines)
        out = list(lines)
        for i in range(len(lines) - 2, -1, -1):
            m = FENCE_OPEN.match(lines[i])
            inc = INCLUDE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if not (m and inc and (i == 0 or not in_code[i - 1] or lines[i - 1].strip().startswith("`"))):
                continue
            target = inc.group("target")
            path, _, section = target.partition(":")
            if not path.startswith("snippets/"):
                continue
            line = section_line(ROOT / path, section) if section else 1
            out[i] = f'{m.group("indent")}{m.group("fence")}python title="{target}"'
            j = i + 2
            while j < len(lines) and not lines[j].strip().startswith(m.group("fence")):
                j += 1
            href = link(src, code_uri(self.config.code_dir, path), line_anchor(line or 1))
            out.insert(j + 1, f'{m.group("indent")}<small class="kb-source">[源码：`{path}`（由测试执行）]({href})</small>')
            out.insert(j + 1, "")
        return out

    def _footer(self, source: Page) -> str:
        src = source.src_uri
        topics = self.topic_pages
        if source.is_post:
            cats = [c for c in source.meta.get("categories", []) if c in topics]
            if cats:
                links = "、".join(f"[{topics[c].title}]({link(src, topics[c].src_uri)})" for c in cats)
                return f"\n\n---\n\n<small class=\"kb-related\">相关主题页：{links}</small>\n"
            return ""
        topic = source.meta.get("topic")
        if topic and any(topic in p.meta.get("categories", []) for p in self.kb.posts.values()):
            cat_uri = f"journal/category/{CATEGORY_SLUG(topic, '-')}.md"
            posts = sorted(
                (p for p in self.kb.posts.values() if topic in p.meta.get("categories", [])),
                key=lambda p: p.post_key,
            )
            post_links = "、".join(f"[{p.post_key}]({link(src, p.src_uri)})" for p in posts)
            return (
                f"\n\n---\n\n<small class=\"kb-related\">日志中的相关笔记：{post_links}"
                f"（[{topic} 分类下的全部日志]({link(src, cat_uri)})）</small>\n"
            )
        return ""

    def on_page_content(self, html, page, config, files):
        # MkDocs only sees ids made by Markdown; the line anchors that Pygments
        # writes into code blocks (evidence links) count too, so that strict
        # anchor validation checks every link to them.
        if page.present_anchor_ids is not None:
            page.present_anchor_ids |= set(HTML_ID.findall(html))
        return html

    # ---- generated pages ---------------------------------------------------
    def _code_page(self, rel_path: str) -> str:
        code = (ROOT / rel_path).read_text(encoding="utf-8")
        # Escape snippet markers so pymdownx.snippets shows them instead of acting on them.
        code = re.sub(r"(?m)^([ ]*)(# )?--8<--", r"\1\2;--8<--", code)
        users = [p for p in self.kb.pages if rel_path in p.text]
        used = "、".join(f"[{p.title}]({link(code_uri(self.config.code_dir, rel_path), p.src_uri)})" for p in users)
        return (
            f"---\ntitle: {rel_path}\nsearch:\n  exclude: true\n---\n\n"
            f"# `{rel_path}`\n\n"
            f"测试套件运行本文件（`pytest {rel_path}`）及其中每个 `test_*` 函数。"
            + (f"引用它的页面：{used}。" if used else "")
            + f"\n\n````python linenums=\"1\"\n{code}````\n"
        )

    def _claims_page(self) -> str:
        uri = self.config.claims_page
        by_topic: dict[str, list[Block]] = defaultdict(list)
        for b in self.kb.claims:
            by_topic[self.kb.topic_of(self.kb.page_of(b))].append(b)
        order = ["基础", *allowed_topics()]
        topics = sorted(by_topic, key=lambda t: (order.index(t) if t in order else len(order), t))
        total = Counter(b.get("status") for b in self.kb.claims)
        out = [
            "---", "title: 论断", "---", "", "# 论断", "",
            "每条论断是学习者理解中的一句话，带着状态和判定它的测试。状态由测试决定："
            "**已验证**的测试断言这句话成立，**已证伪**的测试断言反例，**部分成立**的测试同时断言成立的部分和不成立的部分，"
            "**待解决**的论断写明还缺什么。测试失败时 `make test` 失败，并报出论断的名字。", "",
            f"共 **{len(self.kb.claims)}** 条论断：" + "，".join(f"{STATUS_LABELS[s]} {total[s]}" for s in STATUSES) + "。",
            "", "| 主题 | " + " | ".join(STATUS_LABELS[s] for s in STATUSES) + " | 合计 |",
            "|---|" + "---:|" * (len(STATUSES) + 1),
        ]
        for t in topics:
            counts = Counter(b.get("status") for b in by_topic[t])
            out.append(f"| [{t}](#{CATEGORY_SLUG(t, '-') or 'topic'}) | " + " | ".join(str(counts[s]) for s in STATUSES) + f" | {len(by_topic[t])} |")
        for t in topics:
            out += ["", f"## {t} {{#{CATEGORY_SLUG(t, '-') or 'topic'}}}", "", "| 状态 | 论断 | 判定测试 | 页面 |", "|---|---|---|---|"]
            for b in sorted(by_topic[t], key=lambda b: STATUSES.index(b.get("status"))):
                page = self.kb.page_of(b)
                status = b.get("status")
                test = b.get("test")
                if test:
                    path, func = self.kb.test_target(test)
                    rel_path = path.relative_to(ROOT).as_posix()
                    test_cell = f"[`{func}`]({link(uri, code_uri(self.config.code_dir, rel_path), line_anchor(python_functions(path)[func]))})"
                else:
                    test_cell = f"尚缺：{b.get('missing') or '—'}"
                title = b.title.replace("|", "\\|")
                out.append(
                    f'| <span class="kb-status {status}">{STATUS_LABELS[status]}</span> '
                    f"| [{title}]({link(uri, page.src_uri, self.kb.anchor(b))}) | {test_cell} "
                    f"| [{page.title}]({link(uri, page.src_uri)}) |"
                )
        return "\n".join(out) + "\n"

    def _questions_page(self) -> str:
        uri = self.config.questions_page
        qs = self.kb.questions
        open_qs = [q for q in qs if not q.answered]
        done = [q for q in qs if q.answered]
        out = [
            "---", "title: 问题", "---", "", "# 问题", "",
            "日志里以问自己问题的方式学习：这里汇总所有问题、中断时的重启点（`>>`）、未勾选的任务和主题页里的问题框，"
            "每条都链接到提出它的地方；已解答的问题链接到回答它的论断或小节。终端里用 `kb questions` 列出待解决的问题（带 `file:line`）。",
            "", f"共 **{len(qs)}** 个问题：待解决 **{len(open_qs)}**，已解答 **{len(done)}**。",
        ]

        def where(q) -> str:
            page = q.page
            label = page.post_key and f"日志 {page.post_key}" or page.title
            return f"[{label}]({link(uri, page.src_uri, q.anchor)})"

        def grouped(items, render):
            groups: dict[str, list] = defaultdict(list)
            for q in items:
                groups[q.page.src_uri].append(q)
            lines = []
            for src_uri, group in groups.items():
                page = group[0].page
                name = f"日志 {page.post_key}" if page.is_post else page.title
                lines += ["", f"### {name}", ""]
                lines += [render(q) for q in group]
            return lines

        def text(q) -> str:
            return q.text.replace("[", "\\[").replace("]", "\\]").replace("*", "\\*").replace("<", "&lt;")

        out += ["", "## 待解决", ""]
        out += grouped(open_qs, lambda q: f"- {text(q)}（{where(q)}）") if open_qs else ["没有待解决的问题。"]
        out += ["", "## 已解答", ""]

        def answered(q) -> str:
            if not q.answered_by:
                return f"- {text(q)}（{where(q)}，已勾选）"
            answers = "；".join(
                f"[{b.title}]({link(uri, self.kb.page_of(b).src_uri, self.kb.anchor(b))})"
                + (f' <span class="kb-status {b.get("status")}">{STATUS_LABELS[b.get("status")]}</span>' if b.kind == "claim" else "")
                for b in q.answered_by
            )
            return f"- {text(q)}（{where(q)}）→ {answers}"

        out += grouped(done, answered) if done else ["还没有已解答的问题。"]
        return "\n".join(out) + "\n"
