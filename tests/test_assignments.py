"""Assignments: student versions hold no solution, and the autograder tells them apart."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from nninvert_lib import assignments as asg
from nninvert_lib import cli

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "assignments").glob("*.ipynb"))
SMOKE = {"profile": "smoke"}
# the first task of each assignment, put back alone to make a partly solved notebook
FIRST_TASK = {"a1_softmax_selu": "softmax", "a2_pinv_null_space": "pinv", "a3_lm_step": "residual"}


def _id(path: Path) -> str:
    return path.stem


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _graded_ids(nb) -> list[str]:
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if asg.is_graded_cell(c)]


def _solution_only_lines(nb) -> set[str]:
    """Lines that occur inside solution or hidden-test regions and nowhere else."""
    inside, outside = set(), set()
    for cell in nb.cells:
        region = False
        for line in cell.source.split("\n"):
            mark = asg._marker(line)
            if mark in (asg.BEGIN_SOLUTION, asg.BEGIN_HIDDEN_TESTS):
                region = True
            elif mark in (asg.END_SOLUTION, asg.END_HIDDEN_TESTS):
                region = False
            elif line.strip():
                (inside if region else outside).add(line.strip())
    return inside - outside


def _with_solutions_of(student, instructor, task: str):
    """``student`` with the instructor's solution cells of one task put back."""
    nb = copy.deepcopy(student)
    reference = {c.metadata["nbgrader"]["grade_id"]: c for c in instructor.cells
                 if asg.is_solution_cell(c)}
    for i, cell in enumerate(nb.cells):
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if asg.is_solution_cell(cell) and asg.task_of(gid) == task:
            nb.cells[i] = copy.deepcopy(reference[gid])
    return nb


def _tiny_assignment(**overrides):
    """An instructor notebook without heavy imports: two tasks, a hidden test, 6 points."""
    params = v4.new_code_cell('profile = "quick"\nbonus = 0')
    params.metadata["tags"] = ["parameters"]
    cells = {
        "params": params,
        "square-solution": v4.new_code_cell(
            "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"),
        "square-small": v4.new_code_cell("assert square(3) == 9"),
        "square-hidden": v4.new_code_cell(
            "assert square(0) == 0\n### BEGIN HIDDEN TESTS\nassert square(-4) == 16\n"
            "### END HIDDEN TESTS"),
        "cube-solution": v4.new_code_cell("def cube(x):\n    return x ** 3"),
        "cube-partial": v4.new_code_cell("sum(cube(k) == k ** 3 for k in range(3)) * 1.0"),
    }
    meta = {"square-solution": (True, None), "square-small": (False, 1),
            "square-hidden": (False, 2), "cube-solution": (True, None), "cube-partial": (False, 3)}
    for gid, (solution, points) in meta.items():
        cells[gid].metadata["nbgrader"] = {"grade": not solution, "solution": solution,
                                           "locked": not solution, "grade_id": gid,
                                           "schema_version": 3, "task": False}
        if points is not None:
            cells[gid].metadata["nbgrader"]["points"] = points
    cells.update(overrides)
    nb = v4.new_notebook(cells=[c for c in cells.values() if c is not None])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


# --------------------------------------------------------------------------- the notebooks


def test_there_are_three_assignments():
    assert [p.stem for p in SOURCES] == ["a1_softmax_selu", "a2_pinv_null_space", "a3_lm_step"]


@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_instructor_notebook_is_well_formed_with_several_tasks(path):
    nb = _read(path)
    asg.check_assignment(nb, path.name)
    tasks = {asg.task_of(g) for g in _graded_ids(nb)}
    assert len(tasks) >= 2
    assert FIRST_TASK[path.stem] in tasks
    solutions = {asg.task_of(c.metadata["nbgrader"]["grade_id"]) for c in nb.cells
                 if asg.is_solution_cell(c)}
    assert solutions == tasks, "every task has a solution cell and graded tests"


@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_student_version_contains_no_solution_code(path, tmp_path):
    instructor = _read(path)
    out = asg.make_student_version(path, tmp_path)
    assert out == tmp_path / path.name
    student = _read(out)
    text = "\n".join(c.source for c in student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    lines = {line.strip() for line in text.split("\n")}
    leaked = _solution_only_lines(instructor) & lines
    assert not leaked, f"solution lines left in the student version: {sorted(leaked)[:5]}"
    assert len(_solution_only_lines(instructor)) >= 10
    for cell in student.cells:
        if asg.is_solution_cell(cell):
            assert "raise NotImplementedError()" in cell.source
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert _graded_ids(student) == _graded_ids(instructor)
    first = next(c for c in student.cells if c.cell_type == "code")
    assert "parameters" in first.metadata["tags"] and "profile" in first.source


def test_make_student_versions_writes_every_assignment_outside_notebooks(tmp_path):
    written = asg.make_student_versions(ROOT / "notebooks" / "assignments", tmp_path / "student")
    assert [p.name for p in written] == [p.name for p in SOURCES]
    assert all(p.is_file() and (ROOT / "notebooks") not in p.parents for p in written)


def test_make_refuses_to_overwrite_the_instructor_notebook(tmp_path):
    src = tmp_path / "tiny.ipynb"
    nbformat.write(_tiny_assignment(), src)
    with pytest.raises(ValueError, match="overwrite the instructor notebook"):
        asg.make_student_version(src, src)


# --------------------------------------------------------------------------- the format


def test_stub_replaces_the_solution_region_at_its_indentation():
    student = asg.student_notebook(_tiny_assignment())
    square = student.cells[1].source
    assert square == "def square(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert student.cells[4].source == asg.CODE_STUB   # a solution cell without markers
    assert student.cells[3].source == "assert square(0) == 0"
    assert student.cells[3].metadata["editable"] is False


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without a matching"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "do not nest"),
])
def test_unbalanced_solution_markers_are_refused(source, message):
    cell = v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                 "grade_id": "square-solution", "schema_version": 3}
    with pytest.raises(ValueError, match=message):
        asg.student_notebook(_tiny_assignment(**{"square-solution": cell}), "tiny.ipynb")


def test_solution_marker_outside_a_solution_cell_is_refused():
    cell = v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")
    with pytest.raises(ValueError, match="not a solution cell"):
        asg.check_assignment(_tiny_assignment(extra=cell))


def test_notebook_without_graded_cells_is_refused(tmp_path):
    nb = _tiny_assignment(**{"square-small": None, "square-hidden": None, "cube-partial": None})
    src = tmp_path / "nothing.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(ValueError, match="nothing.ipynb has no graded cell"):
        asg.make_student_version(src, tmp_path / "out.ipynb")
    with pytest.raises(ValueError, match="no graded cell"):
        asg.grade_notebook(src)


def test_duplicate_grade_ids_and_missing_points_are_refused():
    twin = copy.deepcopy(_tiny_assignment().cells[2])
    with pytest.raises(ValueError, match="used twice"):
        asg.check_assignment(_tiny_assignment(twin=twin))
    pointless = copy.deepcopy(twin)
    del pointless.metadata["nbgrader"]["points"]
    with pytest.raises(ValueError, match="points > 0"):
        asg.check_assignment(_tiny_assignment(**{"square-small": pointless}))


def test_cells_are_scored_as_nbgrader_does():
    cell = copy.deepcopy(_tiny_assignment().cells[5])          # 3 points
    cell.outputs = [v4.new_output("error", ename="AssertionError", evalue="no", traceback=[])]
    assert asg.score_cell(cell) == (0.0, "AssertionError: no")
    cell.outputs = [v4.new_output("stream", name="stderr", text="a warning")]
    assert asg.score_cell(cell) == (0.0, "wrote to stderr: a warning")
    cell.outputs = [v4.new_output("execute_result", data={"text/plain": "2.0"})]
    assert asg.score_cell(cell) == (2.0, "partial credit 2")
    cell.outputs = [v4.new_output("stream", name="stdout", text="fine")]
    assert asg.score_cell(cell) == (3.0, None)


def test_parameters_need_a_parameters_cell():
    nb = _tiny_assignment(params=v4.new_code_cell("x = 1"))
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        asg.inject_parameters(nb, {"profile": "smoke"})
    with pytest.raises(ValueError, match="identifiers"):
        asg.inject_parameters(_tiny_assignment(), {"not a name": 1})


def test_restored_tests_replace_edited_ones_and_deleted_ones_are_reported():
    source = _tiny_assignment()
    submission = asg.student_notebook(source)
    submission.cells[2].source = "pass  # edited away"
    del submission.cells[3]
    submission.cells.append(copy.deepcopy(submission.cells[2]))      # a copy to earn twice
    restored, missing = asg.restore_tests(submission, source)
    assert restored.cells[2].source == "assert square(3) == 9"
    assert missing == ["square-hidden"]
    assert _graded_ids(restored) == ["square-small", "cube-partial"]


# --------------------------------------------------------------------------- grading (kernels)


@pytest.mark.slow
def test_grader_scores_a_tiny_assignment_with_hidden_tests_and_partial_credit(tmp_path):
    src = tmp_path / "tiny.ipynb"
    nbformat.write(_tiny_assignment(), src)
    student = tmp_path / "student" / "tiny.ipynb"
    asg.make_student_version(src, student)
    nb = _read(student)
    nb.cells[1].source = "def square(x):\n    return abs(x) * x"   # wrong for negative x
    nb.cells[4].source = "def cube(x):\n    return x ** 3 if x < 2 else 0"
    nb.cells[3].source = "pass"                                    # try to skip the test
    nbformat.write(nb, student)
    out = tmp_path / "grades" / "tiny.json"
    assert asg.main(["grade", str(student), "--source", str(src), "--out", str(out),
                     "--param", "bonus=2"]) == 0
    report = json.loads(out.read_text())
    by_id = {t["grade_id"]: t for t in report["tests"]}
    assert by_id["square-small"]["status"] == "passed"
    assert by_id["square-hidden"]["status"] == "failed"                # the hidden -4 check
    assert by_id["square-hidden"]["message"].startswith("AssertionError")
    assert by_id["cube-partial"]["points"] == 2.0 and by_id["cube-partial"]["status"] == "partial"
    assert report["tasks"]["square"] == {"score": 1.0, "max_score": 3.0, "passed": 1, "total": 2}
    assert report["score"] == 3.0 and report["max_score"] == 6.0
    assert report["parameters"] == {"bonus": 2} and report["kernel_error"] is None


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    return Path(tmp_path_factory.mktemp("assignments"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_instructor_version_scores_full_marks(path, student_dir):
    out = student_dir / f"{path.stem}-instructor.json"
    report = asg.grade_notebook(path, path, parameters=SMOKE, out=out)
    failed = [t for t in report["tests"] if t["status"] != "passed"]
    assert not failed, failed
    assert report["score"] == report["max_score"] >= 9
    assert report["kernel_error"] is None
    assert json.loads(out.read_text())["score"] == report["score"]
    assert sum(t["max_score"] for t in report["tasks"].values()) == report["max_score"]


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_student_version_runs_and_scores_zero(path, student_dir):
    student = asg.make_student_version(path, student_dir / path.name)
    report = asg.grade_notebook(student, path, parameters=SMOKE)
    assert report["kernel_error"] is None
    assert report["score"] == 0 and report["max_score"] >= 9
    assert [t["grade_id"] for t in report["tests"]] == _graded_ids(_read(path))
    assert all(t["status"] == "failed" and "NotImplementedError" in t["message"]
               for t in report["tests"])


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_partly_solved_version_scores_strictly_between(path, student_dir):
    task = FIRST_TASK[path.stem]
    instructor = _read(path)
    partial = _with_solutions_of(asg.student_notebook(instructor, path.name), instructor, task)
    submission = student_dir / f"{path.stem}-partial.ipynb"
    nbformat.write(partial, submission)
    report = asg.grade_notebook(submission, path, parameters=SMOKE)
    assert 0 < report["score"] < report["max_score"]
    solved = report["tasks"][task]
    assert solved["score"] == solved["max_score"] == report["score"]


def test_command_line_makes_student_versions(tmp_path, capsys):
    assert cli.main(["assignments", "make", str(ROOT / "notebooks" / "assignments"),
                     str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in SOURCES]
    assert "wrote" in capsys.readouterr().out
    assert asg.main(["make", str(tmp_path / "missing.ipynb"), str(tmp_path / "x")]) == 2


def test_an_unreadable_submission_does_not_stop_the_others(tmp_path, capsys):
    """Grading a class: a corrupt or missing notebook is reported, with a JSON report
    saying why, and the submissions after it are still graded."""
    src = tmp_path / "tiny.ipynb"
    nbformat.write(_tiny_assignment(), src)
    good = tmp_path / "student" / "good.ipynb"
    asg.make_student_version(src, good)
    corrupt = tmp_path / "student" / "corrupt.ipynb"
    corrupt.write_text("not a notebook")
    missing = tmp_path / "student" / "missing.ipynb"
    out = tmp_path / "grades"
    out.mkdir()
    argv = ["grade", str(corrupt), str(missing), str(good), "--source", str(src),
            "--out", str(out)]
    assert asg.main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {corrupt}:" in err and f"error: {missing}: no such notebook" in err
    assert "2 of 3 submission(s) could not be graded" in err
    assert json.loads((out / "good.json").read_text())["max_score"] == 6.0
    for bad in ("corrupt", "missing"):
        report = json.loads((out / f"{bad}.json").read_text())
        assert report["score"] is None and report["error"]
