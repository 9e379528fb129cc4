"""A knowledge base that grows: `kb topic new`, `kb import`, `kb init`, `kb publish`."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import frontmatter
import pytest
from conftest import ROOT, build_in_process, kb, mkdocs_build, run, text_of

from kb.project import read_config
from kb.topics import module_name, slugify

# ---- kb topic new ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, slug, module",
    [
        ("扩散策略", "kuo-san-ce-lue", "kuo_san_ce_lue"),
        ("Diffusion Policy", "diffusion-policy", "diffusion_policy"),
        ("RLHF/奖励模型", "rlhf-jiang-li-mo-xing", "rlhf_jiang_li_mo_xing"),
        ("Flow-GRPO", "flow-grpo", "flow_grpo"),
        ("3D 重建", "3d-zhong-jian", "topic_3d_zhong_jian"),
        ("../../etc/passwd", "etc-passwd", "etc_passwd"),  # no way out of docs/topics or snippets
        ("import", "import", "topic_import"),  # a Python keyword cannot name a package
    ],
)
def test_topic_names_get_clean_slugs(name, slug, module):
    assert slugify(name) == slug and module_name(slug) == module


def lines_kept(old: str, new: str) -> bool:
    """Whether ``new`` is ``old`` with lines added only (every old line, in order, unchanged)."""
    it = iter(new.split("\n"))
    return all(any(line == n for n in it) for line in old.split("\n"))


@pytest.fixture
def bare(tmp_path) -> Path:
    """This project's mkdocs.yml (full nav, comments) with empty docs/topics and snippets."""
    shutil.copy2(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "topics").mkdir(parents=True)
    (tmp_path / "snippets").mkdir()
    return tmp_path


def test_topic_new_adds_lines_to_mkdocs_yml_and_changes_none(bare):
    before = text_of(bare / "mkdocs.yml")
    r = kb(bare, "topic", "new", "RLHF/奖励模型")
    assert r.returncode == 0, r.stderr
    after = text_of(bare / "mkdocs.yml")
    assert lines_kept(before, after) and len(after.split("\n")) == len(before.split("\n")) + 2
    config = read_config(bare / "mkdocs.yml")
    blog = next(p["blog"] for p in config["plugins"] if isinstance(p, dict) and "blog" in p)
    assert blog["categories_allowed"][-1] == "RLHF/奖励模型"
    section = next(v for item in config["nav"] for v in item.values() if isinstance(v, list) and "topics/index.md" in v)
    assert {"RLHF/奖励模型": "topics/rlhf-jiang-li-mo-xing.md"} in section
    assert section[-1] == {"标签": "tags.md"}  # after the topics, before the tags page
    assert (bare / "docs/topics/rlhf-jiang-li-mo-xing.md").is_file()
    assert (bare / "snippets/rlhf_jiang_li_mo_xing/log_density.py").is_file()


CATEGORIES_LINE = next(
    i for i, line in enumerate(text_of(ROOT / "mkdocs.yml").split("\n"), 1) if line.strip() == "categories_allowed:"
)


@pytest.mark.parametrize(
    "name, message",
    [
        ("SAC", f"mkdocs.yml:{CATEGORIES_LINE}: the topic 'SAC' already exists"),
        ("flow matching", "the topic 'Flow Matching' already exists"),
        ("Flow GRPO", "would have the URL slug 'flow-grpo' of the existing topic 'Flow-GRPO'"),
        ("", "the topic name is empty"),
        ("   ", "the topic name is empty"),
        ("!!!", "has no letters or digits"),
        ('say "hi"', "double quote"),
        ("a\x1bb", "control or invisible character"),
    ],
)
def test_topic_new_refuses_in_one_line_and_writes_nothing(bare, name, message):
    before = {p: p.read_bytes() for p in bare.rglob("*") if p.is_file()}
    r = kb(bare, "topic", "new", name)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert {p: p.read_bytes() for p in bare.rglob("*") if p.is_file()} == before


def test_topic_new_refuses_a_slug_whose_page_or_package_exists(bare):
    (bare / "docs/topics/kuo-san-ce-lue.md").write_text("# 已有的页面\n", encoding="utf-8")
    before = text_of(bare / "mkdocs.yml")
    r = kb(bare, "topic", "new", "扩散策略")
    assert r.returncode == 2 and "docs/topics/kuo-san-ce-lue.md: already exists" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and text_of(bare / "mkdocs.yml") == before
    assert not (bare / "snippets/kuo_san_ce_lue").exists()
    (bare / "docs/topics/kuo-san-ce-lue.md").unlink()
    (bare / "snippets/kuo_san_ce_lue").mkdir()
    r = kb(bare, "topic", "new", "扩散策略")
    assert r.returncode == 2 and "snippets/kuo_san_ce_lue: already exists" in r.stderr, r.stderr


def test_a_name_with_yaml_syntax_stays_a_name(bare):
    r = kb(bare, "topic", "new", "Q: what #1? [x], {y} & *z")
    assert r.returncode == 0, r.stderr
    blog = next(p["blog"] for p in read_config(bare / "mkdocs.yml")["plugins"] if isinstance(p, dict) and "blog" in p)
    assert blog["categories_allowed"][-1] == "Q: what #1? [x], {y} & *z"
    page = frontmatter.load(bare / "docs/topics/q-what-1-x-y-z.md")
    assert page["topic"] == page["title"] == "Q: what #1? [x], {y} & *z"


def test_topic_new_dry_run_writes_nothing(bare):
    before = {p: p.read_bytes() for p in bare.rglob("*") if p.is_file()}
    r = kb(bare, "topic", "new", "--dry-run", "Diffusion Policy")
    assert r.returncode == 0 and "would write docs/topics/diffusion-policy.md" in r.stdout, r.stderr
    assert {p: p.read_bytes() for p in bare.rglob("*") if p.is_file()} == before


def test_new_names_topic_new_for_an_unknown_topic_without_a_far_guess(bare):
    (bare / "docs/journal/posts").mkdir(parents=True)
    r = kb(bare, "new", "--topic", "Diffusion Policy", "-m", "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "kb topic new 'Diffusion Policy'" in r.stderr and "did you mean" not in r.stderr
    r = kb(bare, "new", "--topic", "PPO", "-m", "x")  # PPO is not DPO: no guess
    assert r.returncode == 2 and "did you mean" not in r.stderr and "kb topic new PPO" in r.stderr
    r = kb(bare, "new", "--topic", "Flow matchin", "-m", "x")  # a typo is still caught
    assert "did you mean 'Flow Matching'?" in r.stderr


@pytest.mark.timeout(400)
def test_a_new_topic_is_accepted_everywhere(mini_project, kb_here, in_process):
    """Collection, strict build, claims page, journal categories and kb new all accept the topic,
    and its claim is decided by its test (counterfactual included)."""
    r = kb_here(mini_project, "topic", "new", "扩散策略")
    assert r.returncode == 0, r.stderr
    r = kb_here(mini_project, "new", "--date", "2026-01-05", "--topic", "扩散策略", "-m", "扩散策略的第一条笔记")
    assert r.returncode == 0, r.stderr
    assert frontmatter.load(mini_project / "docs/journal/posts/2026-01-05.md")["categories"] == ["扩散策略"]
    # make test's collection (the snippet module, the page's blocks) and its run
    result = in_process(mini_project, "snippets/kuo_san_ce_lue", "docs/topics/kuo-san-ce-lue.md", "tests/test_pages.py")
    assert result.returncode == 0, result.stdout[-3000:]
    collected = in_process(mini_project, "--collect-only", "snippets").stdout
    assert "test_normal_log_prob_is_the_gaussian_formula" in collected
    # the claim is decided by its test: kb check runs it and its counterfactual
    check = kb_here(mini_project, "check", "docs/topics/kuo-san-ce-lue.md")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "kuo-san-ce-lue-normal-scale-is-std" in check.stdout + check.stderr
    claims = kb_here(mini_project, "claims")
    assert re.search(
        r"docs/topics/kuo-san-ce-lue\.md:\d+: \[verified\] kuo-san-ce-lue-normal-scale-is-std", claims.stdout
    ), claims.stdout
    build = build_in_process(mini_project, mini_project / "site")
    assert build.returncode == 0, build.stdout + build.stderr
    site = mini_project / "site"
    assert "扩散策略" in text_of(site / "topics/kuo-san-ce-lue/index.html")
    assert "kuo-san-ce-lue-normal-scale-is-std" in text_of(site / "claims/index.html")
    assert "20260105" in text_of(site / "journal/category/kuo-san-ce-lue/index.html")


# ---- kb import -------------------------------------------------------------------------------

SEED = ROOT / "seed" / "learning-notes.md"


@pytest.fixture
def empty_journal(tmp_path) -> Path:
    """This project's mkdocs.yml and an empty journal."""
    (tmp_path / "docs" / "journal" / "posts").mkdir(parents=True)
    shutil.copy2(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".kb-journal.lock"}


def test_importing_the_seed_reproduces_the_posts_seed_parts_and_twice_changes_nothing(empty_journal):
    from test_journal import check_verbatim, dated, seed_sections

    r = kb(empty_journal, "import", str(SEED))
    assert r.returncode == 0, r.stderr
    assert check_verbatim(empty_journal) == []
    posts = sorted((empty_journal / "docs/journal/posts").glob("*.md"))
    assert [p.name for p in posts] == ["2025-12-30.md", "2025-12-31.md", "2026-01-01.md"]
    for key, section in dated(seed_sections()).items():  # the seed part is the whole body
        raw = text_of(empty_journal / f"docs/journal/posts/{key[:4]}-{key[4:6]}-{key[6:]}.md")
        # the seed's last line has no line break: its post ends with one, like every file kb writes
        assert raw.split("---\n", 2)[2] == (section if section.endswith("\n") else section + "\n")
    assert "learning-notes.md:1-7: text before the first date line is not imported" in r.stderr
    before = snapshot(empty_journal)
    again = kb(empty_journal, "import", str(SEED))
    assert again.returncode == 0 and again.stdout.count("already in") == 3, again.stdout + again.stderr
    assert snapshot(empty_journal) == before


NOTES = """\
# 我的学习笔记

## 2026-01-02
今天看 DPO 的推导。

```text
## 2026-01-03
(a date line inside a code block is text)
```

2026年1月4日 星期日

- 复习 GRPO
- 组内归一化的优势函数
"""


def test_import_reads_iso_and_chinese_dates_and_files_named_by_date(empty_journal, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    days = tmp_path / "days"
    days.mkdir()
    (days / "2026-01-05.md").write_text("五号的笔记，整个文件是一天。\n", encoding="utf-8")
    (days / "20260106.txt").write_text("六号\r\n第二行\r\n", encoding="utf-8")
    (days / "2026年1月7日.md").write_text("七号\n", encoding="utf-8")
    r = kb(empty_journal, "import", str(notes), str(days), "--topic", "DPO")
    assert r.returncode == 0, r.stderr
    posts = empty_journal / "docs/journal/posts"
    assert sorted(p.name for p in posts.glob("*.md")) == [f"2026-01-0{d}.md" for d in (2, 4, 5, 6, 7)]
    second = frontmatter.load(posts / "2026-01-02.md")
    assert second["date"] == dt.date(2026, 1, 2) and str(second["slug"]) == "20260102"
    assert second["categories"] == ["DPO"]
    assert second.content == (
        "# 20260102\n\n今天看 DPO 的推导。\n\n```text\n## 2026-01-03\n(a date line inside a code block is text)\n```"
    )
    assert text_of(posts / "2026-01-04.md").endswith("# 20260104\n\n- 复习 GRPO\n- 组内归一化的优势函数\n")
    assert text_of(posts / "2026-01-06.md").endswith("# 20260106\n\n六号\n第二行\n")
    before = snapshot(empty_journal)
    assert kb(empty_journal, "import", str(notes), str(days)).returncode == 0
    assert snapshot(empty_journal) == before


TITLED = """\
## 2026-01-02 读 SAC
熵正则那一项的梯度。

### 2026年1月3日（周六）：GRPO 组内归一化
优势函数减去组均值。

# 20260104 flow matching
速度场回归。

## 2026-02-30 的计划（没有这一天：这个标题是正文）

### 20260104-153000 训练日志（一次运行的编号，不是日期）

2026-01-05 这一行以日期开头，但不是标题：它是 1 月 4 日笔记的一部分。
"""


def test_import_dates_a_heading_that_gives_a_title_after_its_date_and_keeps_the_title(empty_journal, tmp_path):
    """A heading that starts with a date and goes on with a title (``## 2026-01-02 读 SAC``) starts that
    day's note, and its line is kept as written. A line that is no heading and only starts with a date is
    text of the note it is in (prose may start with a date)."""
    notes = tmp_path / "notes.md"
    notes.write_text(TITLED, encoding="utf-8")
    r = kb(empty_journal, "import", str(notes))
    assert r.returncode == 0, r.stderr
    posts = empty_journal / "docs/journal/posts"
    assert sorted(p.name for p in posts.glob("*.md")) == [f"2026-01-0{d}.md" for d in (2, 3, 4)]
    assert (
        frontmatter.load(posts / "2026-01-02.md").content == "# 20260102\n\n## 2026-01-02 读 SAC\n熵正则那一项的梯度。"
    )
    assert frontmatter.load(posts / "2026-01-03.md").content == (
        "# 20260103\n\n### 2026年1月3日（周六）：GRPO 组内归一化\n优势函数减去组均值。"
    )
    assert frontmatter.load(posts / "2026-01-04.md").content == (
        "# 20260104\n\n# 20260104 flow matching\n速度场回归。\n\n"
        "## 2026-02-30 的计划（没有这一天：这个标题是正文）\n\n"
        "### 20260104-153000 训练日志（一次运行的编号，不是日期）\n\n"
        "2026-01-05 这一行以日期开头，但不是标题：它是 1 月 4 日笔记的一部分。"
    )
    before = snapshot(empty_journal)
    assert kb(empty_journal, "import", str(notes)).returncode == 0
    assert snapshot(empty_journal) == before


# Titled date headings (wave 9 second reader): where they start a day, and what they leave alone.
TITLED_CUTS = {
    "CRLF line ends": (
        "## 2026-01-02 读 SAC\r\nA\r\n## 2026-01-03\r\nB\r\n",
        [("2026-01-02", "## 2026-01-02 读 SAC\nA\n"), ("2026-01-03", "B\n")],
    ),
    "in a backtick fence": (
        "## 2026-01-02\nA\n```\n## 2026-01-03 读\n```\n",
        [("2026-01-02", "A\n```\n## 2026-01-03 读\n```\n")],
    ),
    "in a tilde fence": (
        "## 2026-01-02\nA\n~~~\n## 2026-01-03 读\n~~~\n",
        [("2026-01-02", "A\n~~~\n## 2026-01-03 读\n~~~\n")],
    ),
    "a title and no text": (
        "## 2026-01-02 读 SAC\n## 2026-01-03 读 PPO\n正文\n",
        [("2026-01-02", "## 2026-01-02 读 SAC\n"), ("2026-01-03", "## 2026-01-03 读 PPO\n正文\n")],
    ),
    "one day twice": (
        "## 2026-01-02 上午\nA\n## 2026-01-02 下午\nB\n",
        [("2026-01-02", "## 2026-01-02 上午\nA\n"), ("2026-01-02", "## 2026-01-02 下午\nB\n")],
    ),
    "a date and a time": ("## 2026-01-02T10:00 读\nA\n", None),  # no date line: refused (the file name is no date)
    "no heading marks": ("2026-01-02 读 SAC\n===========\nA\n", None),  # a setext heading is not read
}


@pytest.mark.parametrize("name", list(TITLED_CUTS))
def test_import_cuts_at_titled_headings_only_where_a_heading_starts_a_day(tmp_path, name):
    """Every line of the file is in exactly one section, in order (nothing lost), and each titled
    heading outside a code block starts its day; CRLF is read as LF."""
    from kb import importer
    from kb.project import KbError

    text, expected = TITLED_CUTS[name]
    path = tmp_path / "notes.md"
    path.write_bytes(text.encode("utf-8"))
    notes: list[str] = []
    if expected is None:
        with pytest.raises(KbError, match=rf"{re.escape(str(path))}:1: no date line"):
            importer.sections(path, notes)
        return
    got = [(s.day.isoformat(), s.content) for s in importer.sections(path, notes)]
    assert got == expected and notes == [], (got, notes)


def test_import_says_so_when_a_titled_heading_names_no_day(empty_journal, tmp_path):
    """A titled heading whose date is no day (``## 2026-13-02 读 SAC``, a typo for a day) is kept as text
    of the note before it, as before titled headings started days; the same heading without its title
    is refused. The import must say which line it kept so (file:line), or a day's note is silently
    filed under another day."""
    notes = tmp_path / "notes.md"
    notes.write_text("## 2026-01-05\nA\n\n## 2026-13-02 读 SAC\nB\n", encoding="utf-8")
    r = kb(empty_journal, "import", str(notes))
    assert r.returncode == 0, r.stderr
    assert f"{notes}:4: " in r.stderr and "2026-13-02" in r.stderr, r.stderr
    post = empty_journal / "docs/journal/posts/2026-01-05.md"
    assert frontmatter.load(post).content == "# 20260105\n\nA\n\n## 2026-13-02 读 SAC\nB"


def test_import_twice_across_the_titled_heading_change_adds_nothing(empty_journal, tmp_path):
    """What the importer before titled headings made of a file (its one section, the titled heading and its
    text inside the day before), then an import of the same file: no text is in two posts."""
    notes = tmp_path / "notes.md"
    notes.write_text("## 2026-01-01\nA 段落。\n\n## 2026-01-02 读 SAC\nB 段落。\n", encoding="utf-8")
    posts = empty_journal / "docs/journal/posts"
    (posts / "2026-01-01.md").write_text(
        "---\ndate: 2026-01-01\nslug: '20260101'\ncategories: []\n---\n"
        "# 20260101\n\nA 段落。\n\n## 2026-01-02 读 SAC\nB 段落。\n",
        encoding="utf-8",
    )
    r = kb(empty_journal, "import", str(notes))
    assert r.returncode == 0, r.stderr
    holding = [p.name for p in sorted(posts.glob("*.md")) if "B 段落。" in p.read_text(encoding="utf-8")]
    assert holding == ["2026-01-01.md"], holding
    assert "already in docs/journal/posts/2026-01-01.md" in r.stdout and "2 already there" in r.stderr, r.stdout
    dry = kb(empty_journal, "import", "--dry-run", str(notes))
    assert "0 new posts, 0 appended sections, 2 already there" in dry.stderr, dry.stdout + dry.stderr


def test_import_appends_to_a_day_that_has_a_post_as_a_new_section(empty_journal, tmp_path):
    r = kb(empty_journal, "new", "--date", "2026-01-02", "--topic", "SAC", "-m", "先写的笔记")
    assert r.returncode == 0, r.stderr
    path = empty_journal / "docs/journal/posts/2026-01-02.md"
    old = text_of(path)
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    r = kb(empty_journal, "import", str(notes), "--topic", "DPO")
    assert r.returncode == 0 and "appended to docs/journal/posts/2026-01-02.md" in r.stdout, r.stdout + r.stderr
    new = text_of(path)
    assert new.split("---\n", 2)[2].startswith(old.split("---\n", 2)[2])  # never merged inside it
    assert new.endswith(
        "先写的笔记\n\n## 导入自 notes.md\n\n今天看 DPO 的推导。\n\n```text\n## 2026-01-03\n"
        "(a date line inside a code block is text)\n```\n"
    )
    assert frontmatter.load(path)["categories"] == ["SAC", "DPO"]
    before = snapshot(empty_journal)
    assert kb(empty_journal, "import", str(notes)).returncode == 0
    assert snapshot(empty_journal) == before


def test_import_dry_run_lists_and_writes_nothing(empty_journal):
    before = snapshot(empty_journal)
    r = kb(empty_journal, "import", "--dry-run", str(SEED))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("would create docs/journal/posts/") == 3 and "nothing written" in r.stderr
    assert snapshot(empty_journal) == before


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("bad-date.md", "## 2026-01-02\nok\n\n## 2026-02-30\nx\n", "bad-date.md:4: '## 2026-02-30' is not a date"),
        ("far.md", "## 2026-01-02\nok\n\n# 01010101\nx\n", "far.md:4: 0101-01-01 is outside the journal's range"),
        (
            "control.md",
            "## 2026-01-02\nok\n\n## 2026-01-03\nab\x1bc\n",
            "control.md:5: the note has a control character U+001B, column 3",
        ),
        ("latin1.md", "## 2026-01-02\ncaf\xe9\n".encode("latin-1"), "latin1.md:2: not UTF-8 (byte 0xe9)"),
        ("notes.md", "no dates here\n", "notes.md:1: no date line"),
    ],
)
def test_import_refuses_bad_input_in_one_line_and_writes_nothing(empty_journal, tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    before = snapshot(empty_journal)
    r = kb(empty_journal, "import", str(path))
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert snapshot(empty_journal) == before


def test_imported_posts_build(mini_project, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    r = kb(mini_project, "import", str(notes), "--topic", "GRPO")
    assert r.returncode == 0, r.stderr
    build = mkdocs_build(mini_project, mini_project / "site")
    assert build.returncode == 0, build.stdout + build.stderr
    assert "组内归一化的优势函数" in text_of(mini_project / "site/journal/2026/01/04/20260104/index.html")


def test_import_and_kb_new_at_once_keep_every_note(empty_journal, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    notes = tmp_path / "notes.md"
    notes.write_text(NOTES, encoding="utf-8")
    jobs = [("import", str(notes))] + [("new", "--date", "2026-01-02", "-m", f"并发笔记 {i}") for i in range(6)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda args: kb(empty_journal, *args), jobs))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    post = text_of(empty_journal / "docs/journal/posts/2026-01-02.md")
    assert all(f"并发笔记 {i}" in post for i in range(6)) and post.count("今天看 DPO 的推导。") == 1


# ---- kb init ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """One `kb init` project per session (KaTeX/Mermaid linked from this checkout, as in conftest)."""
    path = tmp_path_factory.mktemp("init") / "我的知识库"
    r = kb(tmp_path_factory.getbasetemp(), "init", str(path), "--name", "我的知识库")
    assert r.returncode == 0, r.stderr
    vendor = ROOT / "docs" / "assets" / "vendor"
    if vendor.exists():
        (path / "docs" / "assets" / "vendor").symlink_to(vendor)
    return path


def test_init_makes_the_machinery_and_none_of_this_content(fresh):
    for part in (
        "mkdocs.yml",
        "Makefile",
        "README.md",
        ".ci/run",
        "pyproject.toml",
        "requirements.lock",
        "kb/cli.py",
        "overrides/main.html",
        "docs/topics/gao-si-fen-bu.md",
        "snippets/gao_si_fen_bu/log_density.py",
        "tests/test_site.py",
    ):
        assert (fresh / part).is_file(), part
    assert text_of(fresh / "requirements.lock") == text_of(ROOT / "requirements.lock")
    readme = text_of(fresh / "README.md")
    assert "make serve" in readme and "make test" in readme and "## Where `kb` comes from" in readme
    config = read_config(fresh / "mkdocs.yml")
    assert config["site_name"] == "我的知识库"
    blog = next(p["blog"] for p in config["plugins"] if isinstance(p, dict) and "blog" in p)
    assert blog["categories_allowed"] == ["高斯分布"]
    posts = list((fresh / "docs/journal/posts").glob("*.md"))
    assert len(posts) == 1 and frontmatter.load(posts[0])["categories"] == ["高斯分布"]
    # nothing of this knowledge base's notes, pages or snippets
    ours = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    theirs = {p.relative_to(fresh / "docs").as_posix() for p in (fresh / "docs").rglob("*.md")}
    assert ours & theirs <= {"index.md", "tags.md", "topics/index.md", "journal/index.md"}
    assert sorted(p.name for p in (fresh / "snippets").iterdir()) == ["__init__.py", "gao_si_fen_bu"]
    for path in [*(fresh / "docs").rglob("*.md"), fresh / "mkdocs.yml", fresh / "README.md"]:
        text = text_of(path)
        assert not re.search(r"\bSAC\b|NeoVerse|20251230|seed/", text), path
    assert run(["git", "rev-parse", "--is-inside-work-tree"], fresh).stdout.strip() == "true"


@pytest.mark.timeout(600)
def test_an_init_project_passes_its_own_tests_and_strict_build(fresh, kb_here):
    # what `make test` runs once its venv is set up (the venv here: this interpreter, same pins)
    r = run([sys.executable, "-m", "kb.testrun", "-n", "0", "-p", "no:cacheprovider", "-q"], fresh, timeout=500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"\b[4-9] passed|\b\d\d+ passed", r.stdout), r.stdout[-2000:]
    check = kb_here(fresh, "check", "docs/topics/gao-si-fen-bu.md")
    assert check.returncode == 0 and "gao-si-fen-bu-normal-scale-is-std" in check.stdout + check.stderr
    dry = run(["make", "-n", "test", "serve"], fresh)
    assert "kb.testrun -n 2" in dry.stdout and "kb serve --dev-addr 127.0.0.1:8000" in dry.stdout


def test_an_init_project_is_served(fresh):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb.cli", "serve", "--dev-addr", f"127.0.0.1:{port}"],
        cwd=fresh,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(fresh)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, page = time.monotonic() + 90, ""
        while time.monotonic() < deadline and "我的知识库" not in page:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode("utf-8")
            except OSError:
                time.sleep(1)
        assert "我的知识库" in page, "kb serve did not serve the new project within 90 s"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_init_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.md").write_text("mine\n", encoding="utf-8")
    r = kb(tmp_path, "init", str(tmp_path / "used"))
    assert r.returncode == 2 and "already exists and is not an empty folder" in r.stderr
    assert r.stderr.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["used"]


# ---- kb publish ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "remote, url",
    [
        ("https://github.com/learner/notes.git", "https://learner.github.io/notes/"),
        ("git@github.com:learner/notes.git", "https://learner.github.io/notes/"),
        ("https://github.com/learner/notes", "https://learner.github.io/notes/"),
        ("/srv/git/notes.git", None),
    ],
)
def test_the_published_address_comes_from_a_github_remote(remote, url):
    from kb.publish import site_url_for

    assert site_url_for(None, "http://127.0.0.1:8000/", remote) == url
    assert site_url_for("https://notes.example.org", "http://127.0.0.1:8000/", remote) == "https://notes.example.org/"


PUBLISHED_TEXT = {".html", ".xml", ".json", ".js", ".css", ".txt"}


@pytest.mark.timeout(300)
def test_publish_to_a_local_bare_repository(fresh, tmp_path):
    git = ["git", "-c", "user.name=kb test", "-c", "user.email=kb@example.org"]
    assert run([*git, "add", "-A"], fresh).returncode == 0
    assert run([*git, "commit", "-q", "-m", "notes"], fresh).returncode == 0
    bare = tmp_path / "remote.git"
    assert run(["git", "init", "-q", "--bare", str(bare)], tmp_path).returncode == 0
    # a local remote and a local site_url: refused in one line, nothing pushed
    r = kb(fresh, "publish", "--remote", str(bare))
    assert r.returncode == 2 and "pass --site-url URL" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert run(["git", "--git-dir", str(bare), "branch"], tmp_path).stdout == ""
    # even when run from inside `kb serve`'s environment, no live status line is published
    r = kb(
        fresh,
        "publish",
        "--remote",
        str(bare),
        "--site-url",
        "https://learner.github.io/notes/",
        KB_LIVE_STATUS=str(tmp_path / "status.json"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "checkout"
    assert run(["git", "clone", "-q", "-b", "gh-pages", str(bare), str(out)], tmp_path).returncode == 0
    assert (out / ".nojekyll").is_file() and "我的知识库" in text_of(out / "index.html")
    assert (out / "topics/gao-si-fen-bu/index.html").is_file() and (out / "claims/index.html").is_file()
    files = [p for p in out.rglob("*") if p.is_file() and ".git" not in p.parts and p.suffix in PUBLISHED_TEXT]
    assert len(files) > 20
    local = [p.relative_to(out).as_posix() for p in files if "127.0.0.1" in p.read_text("utf-8", "replace")]
    assert local == []
    assert not [p for p in files if 'class="kb-live"' in p.read_text("utf-8", "replace")]
    assert not (out / "kb-status.json").exists()
    assert 'href="https://learner.github.io/notes/"' in text_of(out / "index.html")  # the canonical address
