"""The README and docs/: the results tables are what the kept references render to (generated, never
typed), the README's summary of them says nothing its linked tables do not, and every relative link and
image of the documentation leads somewhere.

The tables live in ``docs/results.md`` (``scripts/render_readme.py`` rewrites them); the README carries one
summary table whose rows link to them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from workbench.viz import cells, markdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
NOTEBOOKS = ["revisit-localizers", "oracle-vs-random", "l2-mlp-supervision", "lume"]
# Markdown the documentation is checked for: every page below, and [text](target) / ![alt](image) links.
PAGES = ["README.md", "tests/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?P<image>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
SUMMARY = re.compile(r"<!-- summary -->\n(?P<body>.*?)<!-- /summary -->", re.S)
NUMBER = re.compile(r"[+\-−]?\d+(?:\.\d+)?(?:e-?\d+)?")

pytestmark = pytest.mark.unit  # the kept references carry the calibrated tables (regenerated for issue 13)


def test_results_tables_equal_the_rendering_of_outputs_reference():
    text = RESULTS.read_text(encoding="utf-8")
    blocks = {m.group("name"): m.group("body") for m in markdown.BLOCK.finditer(text)}
    assert set(NOTEBOOKS) <= set(blocks), "every default run has a generated results block"
    for marker, pattern in (("results", markdown.BLOCK), ("paper", markdown.PAPER_BLOCK)):
        assert len(re.findall(f"^<!-- {marker}:", text, re.M)) == len(pattern.findall(text)), (
            f"a <!-- {marker}:… --> marker the renderer does not match (a character its name pattern lacks?)")
    for name, body in blocks.items():
        assert body == markdown.results_block(ROOT / "outputs" / "reference" / name), (
            f"docs/results.md block {name!r} differs from outputs/reference/{name}: run scripts/render_readme.py")
    assert markdown.render_readme(text, ROOT / "outputs" / "reference") == text, (
        "a paper-comparison block differs from its rendering: run scripts/render_readme.py")


def test_the_readme_renders_to_itself():
    """The README has no generated block today; one added later is checked like docs/results.md's."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown.render_readme(text, ROOT / "outputs" / "reference") == text, "run scripts/render_readme.py"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (word characters, spaces and hyphens
    kept, Unicode letters included), spaces to hyphens; inline code and emphasis marks removed."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: str) -> set[str]:
    """Every heading's anchor (repeats get GitHub's -1, -2 …), outside fenced code."""
    found, count = set(), {}
    for line in re.sub(r"```.*?```", "", page, flags=re.S).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            s = slug(m.group(1))
            found.add(f"{s}-{count[s]}" if s in count else s)
            count[s] = count.get(s, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    """Links and images of ``page`` that are absolute, lead to no file, or name an anchor the target lacks."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    problems = []
    for m in LINK.finditer(text):
        target = m.group("target")
        if re.match(r"[a-z]+:", target):
            if re.match(r"https?://github\.com/[^/]+/loc-unlearn", target) or target.startswith("file:"):
                problems.append(f"{target}: link within the repository by a relative path")
            continue
        if target.startswith("/"):
            problems.append(f"{target}: absolute path; use a relative one")
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: {'image' if m.group('image') else 'file'} {path!r} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{target}: {dest.name} has no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_and_image_of_the_documentation_exists(page):
    assert (ROOT / page).is_file(), f"{page} is listed in PAGES but missing"
    assert not broken_links(ROOT / page), f"{page}: " + "; ".join(broken_links(ROOT / page))


def test_the_link_check_catches_a_missing_file_anchor_and_image(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Memory at `8B`\n", encoding="utf-8")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#memory-at-8b) ![ok](fig.png) [ok](#top) [web](https://example.org)\n\n# Top\n"
                    "[gone](docs/b.md) [no anchor](docs/a.md#memory) ![no image](docs/fig.png) [abs](/docs/a.md)\n"
                    "`[code](not/a/link.md)`\n", encoding="utf-8")
    problems = broken_links(page)
    assert len(problems) == 4, problems
    assert [p.split(":")[0] for p in problems] == ["docs/b.md", "docs/a.md#memory", "docs/fig.png", "/docs/a.md"]


def test_anchors_follow_github_for_unicode_and_repeats():
    assert slug("Bring θr / θ_full, or train them on several GPUs") == "bring-θr--θ_full-or-train-them-on-several-gpus"
    assert slug("Synthetic data (`make demo`)") == "synthetic-data-make-demo"
    assert anchors("# Notes\n## Notes\n```\n# not a heading\n```\n") == {"notes", "notes-1"}


def section(page: str, anchor: str) -> str:
    """The text under the heading whose GitHub anchor is ``anchor``, up to the next heading of its level or above."""
    lines = page.splitlines()
    fenced, inside = [], False  # a "# comment" in a code block is no heading
    for line in lines:
        inside ^= line.startswith("```")
        fenced.append(inside or line.startswith("```"))
    for i, line in enumerate(lines):
        m = re.match(r"(#+) (.*)", line)
        if m and not fenced[i] and slug(m.group(2)) == anchor:
            level = len(m.group(1))
            end = next((j for j in range(i + 1, len(lines))
                        if not fenced[j] and re.match(r"#{1,%d} " % level, lines[j])), len(lines))
            return "\n".join(lines[i:end])
    raise AssertionError(f"docs/results.md has no heading for #{anchor}")


def _numbers(text: str) -> set[str]:
    return {n.replace("−", "-").lstrip("+") for n in NUMBER.findall(text)}


def summary_rows(readme: str) -> list[list[str]]:
    m = SUMMARY.search(readme)
    assert m, "the README's summary table sits between <!-- summary --> and <!-- /summary -->"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group("body").splitlines()]
    return rows[2:]  # header, separator


def unsupported(row: list[str], results: str) -> set[str]:
    """Numbers of a summary row's findings (its 3rd and 5th cells) absent from the section its link names."""
    anchor = re.search(r"\(docs/results\.md#([^)]+)\)", row[-1])
    assert anchor, f"summary row {row[0]!r} links to its full table in docs/results.md"
    return _numbers(row[2] + " " + row[4]) - _numbers(section(results, anchor.group(1)))


def test_every_number_of_the_readme_summary_is_in_the_table_it_links_to():
    readme, results = (ROOT / "README.md").read_text(encoding="utf-8"), RESULTS.read_text(encoding="utf-8")
    rows = summary_rows(readme)
    assert len(rows) >= 9, "one summary row per kept experiment"
    for row in rows:
        missing = unsupported(row, results)
        assert not missing, f"README summary row {row[0]!r} · {row[1]!r} states {sorted(missing)}, not in its linked section"


def test_the_summary_check_catches_a_number_its_section_lacks():
    results = RESULTS.read_text(encoding="utf-8")
    row = ["lume (Table 6)", "tiny", "0.918 vs 0.910, calibrated p 0.44", "agrees", "Oracle +0.009, p 0.44",
           "[table](docs/results.md#lume-on-real-lume-task-2)"]
    assert not unsupported(row, results)
    row[2] = "0.918 vs 0.911, calibrated p 0.44"  # a typo, or a table re-rendered without the summary
    assert unsupported(row, results) == {"0.911"}


def test_rendering_reports_both_p_values_and_reached_counts():
    block = markdown.results_block(ROOT / "outputs" / "reference" / "oracle-vs-random")
    assert "p paper (mean / Fisher)" in block and "p calibrated" in block
    assert "MU95 Oracle" in block and re.search(r"\(\d+/\d+\)", block)  # reached counts such as (2/2)


def test_p_value_format():
    assert [cells.p_value(v) for v in (0.05123, 2.3e-5, 1.0, float("nan"), 0.0)] == ["0.051", "2.3e-05", "1", "–", "0"]


def test_facts_line_reports_the_general_knowledge_es_when_the_checks_carry_it(tmp_path):
    import shutil

    import pandas as pd

    kept = tmp_path / "oracle-vs-random"
    shutil.copytree(ROOT / "outputs" / "reference" / "oracle-vs-random", kept)
    assert "general-knowledge ES" not in markdown.results_block(kept)  # older checks: nothing invented
    checks = pd.read_csv(kept / "checks.csv").assign(general_es_r=[1.0, 0.9], general_es_o=[0.2, 0.5])
    checks.to_csv(kept / "checks.csv", index=False)
    assert "general-knowledge ES 0.95 → 0.35 (mean over 2 target seeds)" in markdown.results_block(kept)


# Llama-3.1-8B's shape (no download): the memory numbers of docs/paper-scale.md and docs/evaluate.md are
# estimate_memory's and estimate_eval_memory's for it, in the table's row order.
LLAMA_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, model_type="llama")
MEMORY_ROWS = [((0.1, 16), {"gradient_checkpointing": True}), ((0.1, 16), {}),
               ((0.8, 8), {"gradient_checkpointing": True}),
               *[((0.0, 16 // n), {"mode": "full", "gradient_checkpointing": True, "shards": n}) for n in (1, 2, 4)]]


def test_the_memory_numbers_of_the_docs_are_the_estimates():
    from types import SimpleNamespace

    from workbench.models import GIB, estimate_eval_memory, estimate_memory

    config = SimpleNamespace(**LLAMA_8B)
    table = section((ROOT / "docs" / "paper-scale.md").read_text(encoding="utf-8"), "memory")
    cells = [row.split("|")[2].strip() for row in table.splitlines() if row.startswith("| ")]
    stated = [c for c in cells if re.fullmatch(r"\d+\.\d", c)]
    computed = [f"{estimate_memory(config, f, b, 512, **kw)['total_bytes'] / GIB:.1f}" for (f, b), kw in MEMORY_ROWS]
    assert stated == computed, "docs/paper-scale.md's memory table differs from workbench.models.estimate_memory"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"needs {computed[0]} GiB per GPU" in readme
    evaluate = f"**{estimate_eval_memory(config)['total_bytes'] / GIB:.1f} GiB** on the device"
    assert evaluate in (ROOT / "docs" / "evaluate.md").read_text(encoding="utf-8")


def test_the_readme_example_of_your_own_method_is_the_one_in_docs_extending():
    """The README shows the example short; docs/extending.md explains it: both must show the same code."""
    fenced = re.compile(r"```(?:python|bash)\n(.*?)```", re.S)
    readme = section((ROOT / "README.md").read_text(encoding="utf-8"), "your-own-method-in-one-file")
    extending = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    blocks = fenced.findall(readme)
    assert len(blocks) == 2 and all(b in extending for b in blocks), "copy the README's example into docs/extending.md"


@pytest.mark.unit
def test_the_second_cpu_comparison_equals_its_rendering_from_the_kept_runs():
    """docs/results.md's two-CPU table is what scripts/compare_cpus.py computes from the kept references."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from compare_cpus import report

    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    block = text.split("<!-- cpus -->\n", 1)[1].split("\n<!-- /cpus -->", 1)[0]
    assert block == report(ROOT / "outputs" / "reference", ROOT / "outputs" / "reference" / "amd-epyc")
    assert "**no**" in block  # it says plainly which conclusions did not survive


def test_a_block_marker_the_renderer_cannot_fill_is_an_error():
    for page in ("<!-- results:a b -->\n<!-- /results -->\n", "<!-- paper:tofu-tiny/lume -->\nno end marker\n"):
        with pytest.raises(ValueError, match="not one the renderer can fill"):
            markdown.render_readme(page, ROOT / "outputs" / "reference")


def test_a_paper_block_takes_its_notebook_from_the_kept_params_not_the_folder_name():
    # tofu-tiny/revisit-localizers-tables3-5 is revisit-localizers at 5% with weight-level regions
    page = "<!-- paper:tofu-tiny/revisit-localizers-tables3-5 -->\n<!-- /paper -->\n"
    rendered = markdown.render_readme(page, ROOT / "outputs" / "reference")
    assert "Paper Table 3 (5% localization ratio)." in rendered and "Paper Table 5" in rendered
    assert markdown.notebook_of(ROOT / "outputs" / "reference" / "nowhere" / "lume") == "lume"
