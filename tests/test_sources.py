"""The source readers, as small pure functions: fences, blocks, references, includes, lists."""

from __future__ import annotations

import pytest

from kb import sources
from kb.project import SourceError


def test_front_matter_is_split_as_mkdocs_does_and_line_numbers_agree():
    text = "---\ntitle: T\ndate: 2026-01-02\n...\n\n\n# heading\nbody\n"
    doc = sources.read_document(text, "p.md")
    assert doc.meta["title"] == "T"
    assert doc.body == "# heading\nbody\n"  # MkDocs also drops the blank lines after the front matter
    assert text.split("\n")[doc.body_line - 1] == "# heading"


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("---\ntitle: [unclosed\n---\nbody\n", 3, "not valid YAML"),
        ("---\n- a\n- b\n---\nbody\n", 1, "must be a mapping"),
    ],
)
def test_bad_front_matter_is_refused_with_file_and_line(text, line, words):
    with pytest.raises(SourceError) as e:
        sources.read_document(text, "docs/p.md")
    assert str(e.value).startswith(f"docs/p.md:{line}: ") and words in str(e.value)


def test_no_front_matter_means_the_whole_file_is_body():
    doc = sources.read_document("# only a heading\n", "p.md")
    assert doc.meta == {} and doc.body_line == 1


def test_fences_backticks_tildes_nesting_and_unclosed():
    lines = [
        "a",
        "```python",
        "x = 1",
        "```",
        "b",
        "````md",
        "```python",
        "y",
        "```",
        "````",
        "  ~~~",
        "  z",
        "  ~~~",
        "```",
        "never closed",
    ]
    spans = [(f.start, f.end, f.info) for f in sources.fences(lines)]
    assert spans == [(1, 3, "python"), (5, 9, "md"), (10, 12, ""), (13, 14, "")]
    assert sources.fenced(lines) == [
        False,
        True,
        True,
        True,
        False,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
    ]


def test_a_backtick_info_string_with_backticks_is_not_a_fence():
    assert sources.fences(["```a`b", "x"]) == []


BLOCKS = """\
intro
!!! claim "a title with $x$"
    id: c1
    status: verified
    test: snippets/t/m.py::test_x[0.2]
    journal: 20251231 "frag" qualified

    Explanation.

```markdown
!!! claim "inside code: not a block"
    id: no
```

??? question "why?"
    body
"""


def test_blocks_keys_and_lines():
    blocks = sources.parse_blocks(BLOCKS.split("\n"), first_line=10)
    assert [(b.kind, b.title, b.line) for b in blocks] == [("claim", "a title with $x$", 11), ("question", "why?", 24)]
    claim = blocks[0]
    assert [(f.key, f.line) for f in claim.fields] == [("id", 12), ("status", 13), ("test", 14), ("journal", 15)]
    assert claim.values("test")[0].value == "snippets/t/m.py::test_x[0.2]"
    assert BLOCKS.split("\n")[claim.body_start : claim.end] == ["", "    Explanation."]


@pytest.mark.parametrize(
    "value, expected",
    [
        ('20251231 "frag ment" qualified', ("20251231", "frag ment", "qualified")),
        ('20251231 "frag"', ("20251231", "frag", None)),
        ('20251231  "frag"   answered  ', ("20251231", "frag", "answered")),
    ],
)
def test_journal_references(value, expected):
    ref = sources.parse_ref(value)
    assert (ref.post, ref.fragment, ref.verdict) == expected


@pytest.mark.parametrize("value", ['2025-12-31 "frag"', "20251231 frag", '20251231 "frag" two words', ""])
def test_malformed_journal_references(value):
    assert sources.parse_ref(value) is None


def test_includes_inline_block_escaped_and_sections():
    lines = [
        '--8<-- "snippets/a.py:sec"',
        ';--8<-- "snippets/skip.py"',
        "  -8<- 'snippets/b.py:1:3'",
        "--8<--",
        "snippets/c.py",
        ";snippets/d.py",
        "--8<--",
        'text --8<-- "not.py"',
    ]
    incs = sources.includes(lines, first_line=5)
    assert [(i.line, i.path, i.section) for i in incs] == [
        (5, "snippets/a.py", "sec"),
        (7, "snippets/b.py", None),
        (9, "snippets/c.py", None),
    ]


def test_list_reindent_makes_github_nesting_four_spaces():
    lines = ["4. a", "   - b", "5. c", "   6. d", "- e", "  - f", "    - g"]
    assert sources.normalise_list_indent(lines) == ["4. a", "    - b", "5. c", "6. d", "- e", "    - f", "        - g"]


def test_list_reindent_leaves_fenced_code_alone():
    lines = ["1. a", "   - b", "```python", "   - not a list item", "x = [", "  - 1]", "```", "   - c"]
    out = sources.normalise_list_indent(lines)
    assert out[2:7] == lines[2:7]
    assert out[1] == "    - b"


@pytest.mark.parametrize(
    "line, question",
    [
        ("4. 为什么target_Q_value能作为当前策略的Q-value ？", "为什么target_Q_value能作为当前策略的Q-value ？"),
        ("   1. >> 作业文档里找 critic 网络", "作业文档里找 critic 网络"),
        ("9. actor网络训练部分其实就是on-policy的吧", "actor网络训练部分其实就是on-policy的吧"),
        ("- 增加entropy_bonus", None),
        ("# 20251231", None),
    ],
)
def test_journal_questions(line, question):
    assert sources.journal_question(line, under_ask=False) == question


def test_learner_text_is_protected_but_markdown_still_works():
    lines = [
        "List<int> and a<b 且 c>d & `x<y`",
        '!!! claim "not a claim"',
        "??? question",
        'p {: onclick="x"}',
        '--8<-- ".git/config"',
        "```python",
        '--8<-- "snippets/x.py"',
        "<b>in code</b>",
        "```",
        "**bold**",
    ]
    out = sources.protect_learner_text(lines)
    assert out[0] == "List&lt;int> and a&lt;b 且 c>d &amp; `x<y`"
    assert out[1].startswith("&#33;!! claim") and out[2].startswith("&#63;?? question")
    assert out[3] == 'p &#123;: onclick="x"}'
    assert out[4] == ';--8<-- ".git/config"' and out[6] == ';--8<-- "snippets/x.py"'
    assert out[7] == "<b>in code</b>" and out[9] == "**bold**"


def test_front_matter_is_read_with_the_loader_mkdocs_reads_it_with():
    """``read_document`` parses front matter with the loader MkDocs uses (``FAST_LOADER``: libyaml's
    safe loader, as ``mkdocs.utils.meta``): on every page and post of this project, and on damaged
    front matter, the data and the line of an error are also the pure-Python safe loader's."""
    from mkdocs.utils import meta

    assert sources.FAST_LOADER is meta.SafeLoader
    import yaml
    from mkdocs.utils.meta import YAML_RE

    from kb.project import Project

    fronts = [m.group(1) for p in Project.find().docs_dir.rglob("*.md") if (m := YAML_RE.match(p.read_text("utf-8")))]
    assert len(fronts) >= 20 and sources.FAST_LOADER is not yaml.SafeLoader
    for front in fronts:
        assert yaml.load(front, Loader=sources.FAST_LOADER) == yaml.load(front, Loader=yaml.SafeLoader), front
    for damaged in ("title: [unclosed\n", "a: 1\n  b: 2\n", "date: 2026-01-01\ndate: x: y\n", "- a\nb: c\n"):
        with pytest.raises(yaml.YAMLError) as fast:
            yaml.load(damaged, Loader=sources.FAST_LOADER)
        with pytest.raises(yaml.YAMLError) as pure:
            yaml.load(damaged, Loader=yaml.SafeLoader)
        assert fast.value.problem_mark.line == pure.value.problem_mark.line, damaged


@pytest.mark.parametrize("under_ask", [False, True])
def test_a_line_without_a_question_word_is_passed_over_as_the_full_rules_would(under_ask):
    """``journal_question`` returns early on a line with none of the words its rules look for (most
    lines of a long journal): each rule needs one of them, so the early answer is the rules' answer."""
    lines = [
        "- 使用 target critic 获得下一时刻 Q-value",
        "  1. 熵正则部分，梯度打开了",
        "普通的一句话。",
        "- 那优势函数怎么求？",
        "- >> 重新想一遍 critic 的目标",
        "- 这就是 on-policy 的吧",
        "问：为什么要 double Q",
        "* **加粗的条目**",
    ]
    expected = {
        False: [None, None, None, "那优势函数怎么求？", "重新想一遍 critic 的目标", "这就是 on-policy 的吧", "问：为什么要 double Q", None],
        True: ["使用 target critic 获得下一时刻 Q-value", "熵正则部分，梯度打开了", None, "那优势函数怎么求？", "重新想一遍 critic 的目标", "这就是 on-policy 的吧", "问：为什么要 double Q", "加粗的条目"],
    }  # fmt: skip
    assert [sources.journal_question(line, under_ask) for line in lines] == expected[under_ask]


def test_a_character_yaml_refuses_in_front_matter_is_named_by_its_line():
    """A NUL byte is refused by YAML's reader, which gives a position, not a line: the line is counted
    (after Chinese text, whose characters are several bytes each)."""
    text = "---\ntitle: 标题\ntags:\n  - 强化学习\nnote: a\x00b\n---\n正文\n"
    with pytest.raises(SourceError) as e:
        sources.read_document(text, "p.md")
    assert str(e.value).startswith("p.md:5: front matter is not valid YAML (character U+0000"), e.value


# ---- the early bail-outs of the per-line scans: the same answers as the line-by-line readings ----
# The readings below are the scans as they were before they learned to skip lines (kept here as their
# definition); each fast one must agree with its reading on hand-made cases and on seeded random text.


def _fences_line_by_line(lines: list[str]) -> list[sources.Fence]:
    out, i = [], 0
    while i < len(lines):
        m = sources.FENCE_OPEN.match(lines[i])
        if not m or (m.group("fence")[0] == "`" and "`" in m.group("info")):
            i += 1
            continue
        fence, j = m.group("fence"), i + 1
        while j < len(lines):
            c = lines[j].strip()
            if c.startswith(fence[0] * len(fence)) and not c.lstrip(fence[0]):
                break
            j += 1
        out.append(
            sources.Fence(i, min(j, len(lines) - 1), m.group("indent"), fence, m.group("info").strip(), j < len(lines))
        )
        i = j + 1
    return out


def _markers_line_by_line(lines: list[str]) -> list[tuple[int, str]]:
    out, inside = [], False
    for i, line in enumerate(lines):
        marker = sources.conflict_marker(line)
        if marker:
            out.append((1 + i, marker))
            inside = not line.startswith(">")
        elif inside and line.rstrip() == "=" * 7:
            out.append((1 + i, "======="))
    return out


def _question_every_word(line: str, under_ask: bool) -> str | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    m = sources.LIST_ITEM.match(line)
    text = (m.group("text") if m else s).strip()
    restart = text.startswith(">>")
    text = text.lstrip(">").strip().strip("*").strip()
    asks = any(w in text for w in sources.INTERROGATIVES) or text.rstrip("。.，,！!").endswith("吧")
    return text if restart or (under_ask and m) or asks else None


def _escape_span_by_span(text: str, missing=None) -> str:
    out, last = [], 0
    for m in sources.CODE_SPAN.finditer(text):
        part = text[last : m.start()].translate(sources._TEXT_TABLE)
        out += [sources._unlink(part, missing) if missing else part, m.group(0)]
        last = m.end()
    part = text[last:].translate(sources._TEXT_TABLE)
    return "".join([*out, sources._unlink(part, missing) if missing else part])


def _links_line_by_line(lines: list[str]) -> list[str]:
    out = []
    for line, code in zip(lines, sources.fenced(lines)):
        if code:
            continue
        text = line.lstrip(" \t")
        spans = [m.span() for m in sources.CODE_SPAN.finditer(text)]
        out += [m.group("url") for m in sources.LINK.finditer(text) if not any(a <= m.start() < b for a, b in spans)]
        if m := sources.LINK_DEFINITION.match(text):
            out.append(m.group("url"))
    return out


SCAN_CASES = [
    ["```py", "x", "```", "text", "~~~~", "```", "~~~~", "after"],
    ["  ```", "  ```` not a close", "```", "````"],  # a close needs the fence's length, nothing after it
    ["```py `x`", "```", "```", "never closed", "```"],  # "`" in a backtick fence's info: no fence
    ["~~~", "unclosed to the end"],
    ["<<<<<<< ours", "a", "=======", "b", ">>>>>>> theirs", "=======", "|||||||", "======="],
    ["=======", "<<<<<<<x", "<<<<<<<", "text >>>>>>> mid", ">>>>>>>"],
    ["- 为什么？", "问：", "- 列表", ">> 重来", "# 标题？", "好吧", "  如何做  ", "吗", "", "*什么*"],
    ["a `b` & <c> {d}", "no code [x](y.md) & [z]: q.md", "``a`b``` c", "`unclosed < &"],
]


@pytest.mark.parametrize("lines", SCAN_CASES)
def test_the_fast_scans_agree_with_their_line_by_line_readings(lines):
    def missing(url):
        return url.endswith(".md")

    assert sources.fences(lines) == _fences_line_by_line(lines)
    assert sources.conflict_markers(lines) == _markers_line_by_line(lines)
    assert sources.learner_links(lines) == _links_line_by_line(lines)
    for line in lines:
        for under_ask in (False, True):
            assert sources.journal_question(line, under_ask) == _question_every_word(line, under_ask), line
        assert sources._escape_text(line) == _escape_span_by_span(line), line
        assert sources._escape_text(line, missing) == _escape_span_by_span(line, missing), line


def test_the_fast_scans_agree_on_random_text():
    # 3,000 seeded texts of 1-12 lines built from the pieces the scans look for
    import random

    pieces = ["```", "~~~", "`", "~", "````", " ", "  ", "\t", "py", "x", "<<<<<<<", "|||||||", ">>>>>>>",
              "=======", "=", "<", ">", "&", "{", "[a](b.md)", "[c]: d.md", "[", "](", "]: ", "!", "？", "?", "么", "吧", "如何", "哪",
              "吗", "- ", "1. ", "# ", ">>", "*", "问：", "中文"]  # fmt: skip
    rng = random.Random(0)
    fenced_texts = 0
    for _ in range(3000):
        lines = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 12))]
        found = _fences_line_by_line(lines)
        assert sources.fences(lines) == found, lines
        assert sources.conflict_markers(lines) == _markers_line_by_line(lines), lines
        assert sources.learner_links(lines) == _links_line_by_line(lines), lines
        fenced_texts += bool(found)
        for line in lines:
            assert sources.journal_question(line, False) == _question_every_word(line, False), line
            assert sources._escape_text(line, lambda u: True) == _escape_span_by_span(line, lambda u: True), line
    assert fenced_texts >= 300, fenced_texts  # fences are compared, not only their absence (10% of the texts)
