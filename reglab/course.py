"""Course material from the theme notebooks: `reglab course build OUT` writes three folders.

- OUT/instructor/: the notebooks with their solutions, executed (the report's run: one HTML page each,
  the verdict index, claims.json);
- OUT/student/: the same notebooks with every solution replaced by a stub and outputs cleared, made by
  nbgrader's own `generate_assignment` from OUT/nbgrader/ — a ready nbgrader course folder, so an instructor
  who grades with nbgrader collects and autogrades from there;
- OUT/site/: a static course site that opens from the file system: an index with each theme's thumbnail
  chart, question, exercises and claims, the executed pages, and the student notebooks to download.

The notebooks under notebooks/ are the instructor sources. Exercise cells carry nbgrader's metadata
(`exercise_cells` makes them): the answer cell is a solution cell, the check cell a graded, locked test cell.
"""
from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .config import ConfigError
from .notebook import notebook_paths

ASSIGNMENT = "reglab"  # the nbgrader assignment all theme notebooks belong to
NBGRADER_CONFIG = """\
c = get_config()
c.CourseDirectory.course_id = "reglab"
# The stub keeps the answer cell's first line (`step_size = None`), so a student notebook runs top to bottom
# and each check shows its hint instead of stopping at a NotImplementedError.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
"""
SCHEMA = 3  # nbgrader's cell-metadata schema version
# How a headless Prediction shows its question (reglab.widgets.Prediction); the site reads it back from there.
PREDICT, SKIPPED = "**Predict first.**", "(the prompt is skipped in headless runs)"


def _nbgrader(grade_id: str, *, solution: bool, grade: bool, locked: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": SCHEMA,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def exercise_cells(exercise_id: str, question: str, answer: str, check: str, points: int = 1) -> list:
    """The three cells of an exercise with nbgrader metadata: the question (markdown, locked), the answer
    (a solution cell: its stub line first, then the solution between `### BEGIN SOLUTION` and
    `### END SOLUTION`) and the check (graded, locked; it runs reglab on the answer)."""
    import nbformat

    if "### BEGIN SOLUTION" not in answer or "### END SOLUTION" not in answer:
        raise ValueError(f"exercise {exercise_id}: the answer cell needs ### BEGIN SOLUTION and ### END SOLUTION")
    slug = "ex" + exercise_id.replace(".", "-")
    v4 = nbformat.v4
    return [v4.new_markdown_cell(question, metadata=_nbgrader(f"{slug}-question", solution=False, grade=False, locked=True)),
            v4.new_code_cell(answer, metadata=_nbgrader(f"{slug}-answer", solution=True, grade=False, locked=False)),
            v4.new_code_cell(check, metadata=_nbgrader(f"{slug}-check", solution=False, grade=True, locked=True,
                                                       points=points))]


def exercises_in(notebook) -> list[dict]:
    """The exercises of a notebook (node or path), in order: id, title (the question's heading), and the
    sources of the answer and check cells."""
    if not hasattr(notebook, "cells"):
        import nbformat

        notebook = nbformat.read(str(notebook), as_version=4)
    found = {}
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        m = re.fullmatch(r"ex(\d+)-(\d+)-(question|answer|check)", meta.get("grade_id", ""))
        if not m:
            continue
        ex = found.setdefault(f"{m[1]}.{m[2]}", {"id": f"{m[1]}.{m[2]}"})
        ex[m[3]] = cell.source
        if m[3] == "question":  # "### Exercise 01.1 · Ride the edge of stability" → "Ride the edge of stability"
            heading = cell.source.splitlines()[0].lstrip("# ").strip()
            ex["title"] = re.sub(r"^Exercise\s+[\d.]+\s*·\s*", "", heading)
    return list(found.values())


# ---------------------------------------------------------------------------------------------
# the build


def build(out, only=None, parameters: dict | None = None, progress: bool = True) -> dict:
    """Write OUT/instructor, OUT/student (through nbgrader) and OUT/site. Returns {"pages", "ok"}."""
    from . import report

    out = Path(out)
    paths = notebook_paths(only)
    report.check_all(paths, parameters or {})  # a bad -p is refused before nbgrader or a kernel runs
    student = build_student(out, paths)
    pages, ok = report.build([p.stem for p in paths], parameters, out / "instructor", progress=progress)
    build_site(out, paths, pages, student)
    return {"pages": pages, "ok": ok}


def nbgrader(course: Path, *args: str, unset: tuple = ()) -> None:
    """Run this environment's nbgrader in a course folder (`nbgrader generate_assignment reglab`, ...);
    a failure raises with nbgrader's output. nbgrader starts alembic from PATH, so this environment's bin
    folder goes first; `unset` names environment variables the command should not see."""
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    done = subprocess.run([str(Path(bin_dir) / "nbgrader"), *args, "--log-level=WARN"], cwd=course,
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def build_student(out: Path, paths: list) -> list:
    """Student notebooks by nbgrader generate_assignment over a course folder at OUT/nbgrader."""
    import nbformat

    if shutil.which("nbgrader", path=str(Path(sys.executable).parent)) is None:
        raise ConfigError("reglab course build needs nbgrader: pip install 'reglab[course]'")
    course = out / "nbgrader"
    source = course / "source" / ASSIGNMENT
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG, encoding="utf-8")
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, str(source / path.name))
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    student = out / "student"
    if student.exists():
        shutil.rmtree(student)
    shutil.copytree(course / "release" / ASSIGNMENT, student)
    return sorted(student.glob("*.ipynb"))


def _first_image(notebook) -> str | None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                return png
    return None


def _question(notebook) -> tuple[str, str]:
    """The title (first heading) and the opening paragraph of the notebook's first markdown cell."""
    text = next((c.source for c in notebook.cells if c.cell_type == "markdown"), "")
    lines = text.strip().splitlines()
    title = lines[0].lstrip("# ").strip() if lines else ""
    paragraphs = [p.strip() for p in "\n".join(lines[1:]).split("\n\n") if p.strip()]
    first = paragraphs[0].replace("\n", " ") if paragraphs else ""
    if first.endswith(":") and ". " in first:  # a lead-in to a list that follows says little alone
        first = first[:first.rindex(". ") + 1]
    return title, first


def prediction_question(notebook) -> str:
    """The question of the notebook's prediction, as the executed notebook displayed it (the question may be
    written with the run's parameters in it); "" when there is none."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            if text.startswith(PREDICT):
                return text[len(PREDICT):].replace(SKIPPED, "").strip()
    return ""


def _inline_markdown(text: str) -> str:
    """**bold** and *italic* of a notebook paragraph as HTML (everything else escaped)."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)


def build_site(out: Path, paths: list, pages: list, student: list) -> Path:
    """OUT/site: index.html with one card per theme, the executed pages and the student notebooks."""
    import nbformat

    from .report import tally
    from .claims import claims_table_html

    site = out / "site"
    for sub in ("pages", "student", "thumbs"):
        (site / sub).mkdir(parents=True, exist_ok=True)
    for nb_path in student:
        shutil.copy2(nb_path, site / "student" / nb_path.name)
    by_name = {p["notebook"]: p for p in pages}
    cards = []
    for path in paths:
        page = by_name.get(path.stem, {"error": "not run", "claims": []})
        executed = out / "instructor" / path.name
        nb = nbformat.read(str(executed if executed.exists() else path), as_version=4)
        title, question = _question(nb)
        thumb = ""
        png = _first_image(nb)
        if png:
            (site / "thumbs" / f"{path.stem}.png").write_bytes(base64.b64decode(png))
            thumb = f"<img src='thumbs/{path.stem}.png' alt='the first chart of {html.escape(path.stem)}'>"
        link = ""
        if page.get("html") and (out / "instructor" / page["html"]).exists():
            shutil.copy2(out / "instructor" / page["html"], site / "pages" / page["html"])
            link = f"<a href='pages/{page['html']}'>the executed notebook</a> · "
        found = exercises_in(nb)
        exercises = "".join(f"<li>{html.escape(e['id'])} · {html.escape(e.get('title', ''))}</li>" for e in found)
        status = (f"<span class=bad>failed: {html.escape(page['error'][:300])}</span>" if page.get("error")
                  else tally(page.get("claims", [])))
        seconds = f" · ran in {page['seconds']} s" if "seconds" in page else ""
        cards.append(
            f"<section class=card><div class=thumb>{thumb}</div><div class=text>"
            f"<h2>{html.escape(title or path.stem)}</h2><p>{_inline_markdown(question)}</p>"
            f"<p class=question><b>Predict first:</b> {html.escape(prediction_question(nb))}</p>"
            f"<p>{link}<a href='student/{path.name}' download>student notebook</a>{seconds}</p>"
            f"<p class=status>{status}</p>"
            f"<details open><summary>exercises ({len(found)})</summary><ul>{exercises}</ul></details>"
            f"<details><summary>claims</summary>{claims_table_html(page.get('claims', []))}</details>"
            f"</div></section>")
    style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
             ".card{display:flex;gap:1.2rem;border-bottom:1px solid #ddd;padding:1rem 0}"
             ".thumb{flex:0 0 16rem}.thumb img{width:16rem;border:1px solid #eee}.text{flex:1}"
             "h2{margin:.2rem 0;font-size:1.2rem}table{border-collapse:collapse;width:100%;font-size:.9em}"
             "td,th{border-bottom:1px solid #eee;padding:.2rem;text-align:left}.bad{color:#cf222e;font-weight:600}"
             ".status{color:#555}.question{background:#f6f8fa;padding:.3rem .5rem}@media(max-width:50rem){.card{flex-direction:column}}")
    (site / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>reglab · a course on regularization and learning dynamics</title><style>{style}</style>"
        f"<h1>Regularization and learning dynamics, measured</h1>"
        f"<p>One notebook per theme: each reproduces a published claim, says whether it held at this scale, and "
        f"ends in exercises whose checks run reglab on your answer. Download a student notebook, open it in "
        f"JupyterLab where reglab is installed, and run it top to bottom.</p>"
        f"{''.join(cards)}", encoding="utf-8")
    return site / "index.html"
