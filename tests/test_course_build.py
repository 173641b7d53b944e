"""`reglab course build` on the quickstart: the three folders, nbgrader's autograde on a solved and a stub
submission, the student notebook run top to bottom, and the site in Chromium (screenshots under
test-output/course/)."""
import shutil
from pathlib import Path

import nbformat
import pytest

from reglab import course
from reglab.course import exercises_in
from reglab.notebook import execute

pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install 'reglab[course]')")
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "course"
NOTEBOOK = "00_quickstart"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    result = course.build(out, [NOTEBOOK], progress=False)
    assert result["ok"], result["pages"]
    return out


def test_three_folders_instructor_executed_student_stubbed(built):
    instructor = nbformat.read(str(built / "instructor" / f"{NOTEBOOK}.ipynb"), as_version=4)
    student = nbformat.read(str(built / "student" / f"{NOTEBOOK}.ipynb"), as_version=4)
    assert (built / "site" / "index.html").exists()
    source = exercises_in(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb")
    for ex_source, ex_student in zip(source, exercises_in(student)):
        assert "### BEGIN SOLUTION" not in ex_student["answer"] and "# YOUR CODE HERE" in ex_student["answer"]
        assert ex_student["answer"].splitlines()[0] == ex_source["answer"].splitlines()[0]  # the stub line stays
        assert ex_student["check"] == ex_source["check"]  # checks kept
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    passed = [o for c in instructor.cells if c.metadata.get("nbgrader", {}).get("grade")
              for o in c.outputs if "passed" in o.get("data", {}).get("text/plain", "")]
    assert len(passed) == len(source)


def test_nbgrader_autograde_full_marks_for_the_solution_zero_for_the_stub(built):
    from nbgrader.api import Gradebook

    nbg = built / "nbgrader"
    for student, origin in (("solved", nbg / "source"), ("stub", nbg / "release")):
        target = nbg / "submitted" / student / course.ASSIGNMENT
        target.mkdir(parents=True)
        shutil.copy2(origin / course.ASSIGNMENT / f"{NOTEBOOK}.ipynb", target)
    # without REGLAB_HEADLESS: nbgrader's own NBGRADER_EXECUTION must keep the graded cells quiet
    course.nbgrader(nbg, "autograde", course.ASSIGNMENT, "--force", unset=("REGLAB_HEADLESS",))
    with Gradebook(f"sqlite:///{nbg / 'gradebook.db'}") as gradebook:
        scores = {s: gradebook.find_submission_notebook(NOTEBOOK, course.ASSIGNMENT, s) for s in ("solved", "stub")}
        graded = {s: {g.name: g.score for g in nb.grades if g.cell.name.endswith("-check")} for s, nb in scores.items()}
        maximum = scores["solved"].max_score
    assert maximum == len(exercises_in(nbg / "source" / course.ASSIGNMENT / f"{NOTEBOOK}.ipynb"))
    assert sum(graded["solved"].values()) == maximum and all(v == 0 for v in graded["stub"].values()), graded


def test_student_notebook_runs_top_to_bottom_and_shows_the_hints(built, tmp_path):
    copy = tmp_path / f"{NOTEBOOK}.ipynb"  # a notebook's stem names its theme
    shutil.copy2(built / "student" / copy.name, copy)
    ran = execute(copy, tmp_path / "ran.ipynb")
    texts = [o.get("data", {}).get("text/plain", "") + o.get("text", "") for c in ran.cells for o in c.get("outputs", [])]
    assert not any(o.output_type == "error" for c in ran.cells for o in c.get("outputs", []))
    hints = [t for t in texts if "Hint:" in t and "No answer yet" in t]
    assert len(hints) == len(exercises_in(ran))


def test_site_index_and_a_page_render_in_chromium(built):
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    site = built / "site"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 968, "height": 900})
            errors, failed = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto((site / "index.html").as_uri())
            assert page.locator("section.card").count() == 1
            thumb = page.locator("section.card img").first
            assert thumb.evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.locator(f"a[href='student/{NOTEBOOK}.ipynb']").count() == 1
            executed = nbformat.read(str(built / "instructor" / f"{NOTEBOOK}.ipynb"), as_version=4)
            question = course.prediction_question(executed)
            assert question and question in page.locator(".question").first.inner_text()
            titles = [e["title"] for e in exercises_in(executed)]
            assert all(t and not t.startswith("Exercise") for t in titles)
            assert all(t in page.content() for t in titles)
            page.screenshot(path=str(SHOTS / "index.png"), full_page=True)
            page.click("text=the executed notebook")
            page.wait_for_load_state()
            assert "Exercise 00.1" in page.content()
            page.screenshot(path=str(SHOTS / f"{NOTEBOOK}.png"))
            assert not errors and not failed, (errors, failed)
        finally:
            browser.close()


def test_a_bad_parameter_is_refused_before_anything_is_built(tmp_path):
    from reglab import ConfigError

    with pytest.raises(ConfigError, match="'steps' parameter of 00_quickstart"):
        course.build(tmp_path / "out", [NOTEBOOK], {"steps": -5}, progress=False)
    with pytest.raises(ConfigError, match="Unknown parameter"):
        course.build(tmp_path / "out", [NOTEBOOK], {"no_such_parameter": 1}, progress=False)
    assert not (tmp_path / "out").exists()
