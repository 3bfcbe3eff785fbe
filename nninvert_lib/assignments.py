"""Coursework assignments: student versions without solutions, and an autograder.

The instructor writes one notebook per assignment (``notebooks/assignments/``),
with the solutions in it. From it this module

* makes the **student version** (:func:`make_student_version`): every solution
  region is replaced by a stub, hidden tests are removed, outputs are cleared;
* **grades** a submitted notebook (:func:`grade_notebook`): the graded test cells
  are put back from the instructor's notebook (hidden tests included, so editing
  or deleting a test does not help), the notebook is executed headless with
  :mod:`nbclient`, and every graded cell is scored; the report (total and maximum
  per task, pass/fail and the error message of every test) is a dict, written
  as JSON on request.

Command line (``make assignments`` calls the first)::

    python -m nninvert_lib.assignments make notebooks/assignments _build/assignments/student
    python -m nninvert_lib.assignments grade submission.ipynb --out grade.json --profile smoke
    nninvert assignments make ...        # the same, through the console script

**Conventions: nbgrader's.** The notebooks follow nbgrader's format (cell metadata schema 3), so a course
that runs nbgrader can use them unchanged:

* a **solution cell** has ``metadata.nbgrader = {"solution": true, "grade":
  false, "locked": false, "grade_id": ..., "schema_version": 3}``. Inside it,
  the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (inclusive)
  become ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` at the marker's
  indentation; a solution cell without markers is replaced as a whole (markdown
  solution cells by ``YOUR ANSWER HERE``);
* a **graded test cell** has ``{"grade": true, "solution": false, "locked":
  true, "points": ..., "grade_id": ...}``. Lines between ``### BEGIN HIDDEN
  TESTS`` and ``### END HIDDEN TESTS`` are removed from the student version and
  put back at grading. A graded cell scores (as nbgrader's ``determine_grade``)
  zero when it raises or writes to stderr, the number it displays as its last
  value when that is a number in ``[0, points]`` (partial credit), and full
  points otherwise;
* **tasks**: a grade id reads ``<task>-<check>`` (``softmax-roundtrip``); the
  task is the part before the first ``-``. Scores are summed per task.

A marker is a line holding only a comment with the marker text
(``### BEGIN SOLUTION``); nbgrader accepts the text anywhere in a line, so a
notebook accepted here is accepted by nbgrader too.

**What students see.** Graded test cells stay visible (nbgrader's *visible tests*)
so students can check themselves by running the notebook; they compare the
student's function with the library or with independent properties, never
with a stored answer. Checks that would give an answer away sit in hidden test
regions, which only the instructor's notebook holds. A student who edits or
deletes a test cell gains nothing: grading overwrites every graded cell with
the instructor's version by grade id (a deleted one scores zero, a copied one
nothing). The tests run in the same kernel as the student's code, so a
determined student can still subvert them (say, by replacing
``torch.allclose``); nbgrader shares this limit, and reading the code is the
remedy. Grading executes the student's code with the grader's rights, as
nbgrader does: run it in a container or a throwaway account for untrusted
submissions.

**Why not otter-grader or nbgrader themselves** (evaluated November 2026).
Both install from PyPI next to jupyter-book 1 and our pins without changing an
installed package (``pip install --dry-run`` only adds packages), and both run
offline and headless. Neither fits well enough to be a dependency:

* **nbgrader 0.9.6** adds about 45 packages (jupyterlab 4, notebook 7,
  jupyter_server, alembic, SQLAlchemy migrations, argon2, ...) to do what
  nbformat and nbclient, already installed, can do. Its command line works
  on a course directory (``source/``, ``release/``, ``submitted/<student>/``,
  ``autograded/``) with a SQLite gradebook in which each student must be
  registered first, and it runs the ``alembic`` executable found on ``PATH``:
  called as ``.venv/bin/nbgrader`` without activating the venv (how our Makefile
  calls tools) ``generate_assignment`` failed with ``FileNotFoundError:
  'alembic'``. Grades land in the database and export as one total per
  notebook (CSV); per-test messages must be read from the autograded notebook.
  Its *format* is good and is what this module follows.
* **otter-grader 7.0** adds playwright (a browser automation stack),
  python-on-whales (a Docker client), pydantic, jupytext and fica. Its master
  notebook is split by raw cells holding YAML (``# BEGIN QUESTION``, ...);
  ``otter assign`` builds an autograder zip, its ``otter grade`` runs in
  Docker by default (``otter run`` works locally), and the student notebook
  imports ``otter`` at run time (``grader = otter.Notebook(...)``,
  ``grader.check("q1")``), so every student needs it installed.

What remains (strip markers, overwrite test cells, execute, score) is a few
hundred lines here, with nbgrader's conventions so that switching to nbgrader
later costs nothing. Checked against nbgrader 0.9.6 on the three assignments:
its ``generate_assignment`` writes the same cell sources as
:func:`make_student_version`, and its ``autograde`` scored assignment 1 as this
module does (instructor 9/9, student 0/9, softmax task solved 4/9).
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbformat import NotebookNode

#: the folder of the instructor notebooks in a source checkout.
ASSIGNMENTS_DIR: Path = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"

BEGIN_SOLUTION = "BEGIN SOLUTION"
END_SOLUTION = "END SOLUTION"
BEGIN_HIDDEN_TESTS = "BEGIN HIDDEN TESTS"
END_HIDDEN_TESTS = "END HIDDEN TESTS"
#: what replaces a solution region in a code cell (nbgrader's Python stub).
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
#: what replaces a markdown solution cell (nbgrader's text stub).
TEXT_STUB = "YOUR ANSWER HERE"

_GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


def _nbformat():
    """nbformat, imported on first use (it comes with the ``test`` and ``book`` extras)."""
    try:
        import nbformat
    except ModuleNotFoundError as exc:   # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("assignments need nbformat and nbclient: "
                                  "pip install 'nninvert[test]'") from exc
    return nbformat


def _marker(line: str) -> str | None:
    """The marker text of ``line`` (``"BEGIN SOLUTION"``, ...) or None.

    A marker line is a comment and nothing else: ``### BEGIN SOLUTION``.
    """
    text = line.strip()
    if not text.startswith("#"):
        return None
    text = text.lstrip("#").strip().upper()
    if text in (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS):
        return text
    return None


def _meta(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution_cell(cell: NotebookNode) -> bool:
    """Whether ``cell`` is an nbgrader solution cell (its answer is stripped)."""
    return bool(_meta(cell).get("solution", False))


def is_graded_cell(cell: NotebookNode) -> bool:
    """Whether ``cell`` is an nbgrader graded cell (it earns points)."""
    return bool(_meta(cell).get("grade", False))


def task_of(grade_id: str) -> str:
    """The task a grade id belongs to: the part before the first ``-``.

    >>> task_of("softmax-roundtrip")
    'softmax'
    """
    return grade_id.split("-", 1)[0]


def _where(name: str, index: int, cell: NotebookNode) -> str:
    gid = _meta(cell).get("grade_id")
    return f"{name}: cell {index}" + (f" ({gid!r})" if gid else "")


def check_assignment(nb: NotebookNode, name: str = "notebook") -> None:
    """Check that ``nb`` is a well-formed instructor notebook.

    Args:
        nb: the notebook (nbformat 4).
        name: what to call it in error messages (e.g. its file name).

    Raises:
        ValueError: no graded cell; a graded cell without positive ``points`` or
            a grade id; a grade id that is not ``[A-Za-z0-9_-]+`` or is used
            twice; a solution or hidden-test marker without its partner, nested,
            or in a cell of the wrong kind (solution markers belong in solution
            cells, hidden-test markers in graded cells).
    """
    seen: dict[str, int] = {}
    n_graded = 0
    for i, cell in enumerate(nb.cells):
        meta = _meta(cell)
        where = _where(name, i, cell)
        if meta.get("grade") or meta.get("solution") or meta.get("locked"):
            gid = meta.get("grade_id")
            if not isinstance(gid, str) or not _GRADE_ID.match(gid):
                raise ValueError(f"{where}: nbgrader cells need a grade_id of letters, digits, "
                                 f"'_' and '-', got {gid!r}")
            if gid in seen:
                raise ValueError(f"{where}: grade_id {gid!r} is used twice (also cell {seen[gid]})")
            seen[gid] = i
        if meta.get("grade"):
            n_graded += 1
            points = meta.get("points")
            if not isinstance(points, (int, float)) or isinstance(points, bool) or points <= 0:
                raise ValueError(f"{where}: a graded cell needs points > 0, got {points!r}")
        open_marker = None
        for number, line in enumerate(cell.source.split("\n"), start=1):
            mark = _marker(line)
            if mark is None:
                continue
            at = f"{where}, line {number}"
            if mark in (BEGIN_SOLUTION, BEGIN_HIDDEN_TESTS):
                if open_marker is not None:
                    raise ValueError(f"{at}: '### {mark}' inside an open '### {open_marker}' "
                                     f"region (markers do not nest)")
                if mark == BEGIN_SOLUTION and not meta.get("solution"):
                    raise ValueError(f"{at}: '### {mark}' in a cell that is not a solution "
                                     f"cell; set metadata.nbgrader.solution = true")
                if mark == BEGIN_HIDDEN_TESTS and not meta.get("grade"):
                    raise ValueError(f"{at}: '### {mark}' in a cell that is not a graded "
                                     f"cell; set metadata.nbgrader.grade = true")
                open_marker = mark
            else:
                expected = BEGIN_SOLUTION if mark == END_SOLUTION else BEGIN_HIDDEN_TESTS
                if open_marker != expected:
                    raise ValueError(f"{at}: '### {mark}' without a matching "
                                     f"'### {expected}' before it")
                open_marker = None
        if open_marker is not None:
            end = END_SOLUTION if open_marker == BEGIN_SOLUTION else END_HIDDEN_TESTS
            raise ValueError(f"{where}: '### {open_marker}' is never closed by '### {end}'")
    if n_graded == 0:
        raise ValueError(f"{name} has no graded cell (a cell with metadata.nbgrader.grade = "
                         f"true and points): there is nothing to grade")


def _remove_regions(source: str, begin: str, end: str, stub: str | None) -> tuple[str, bool]:
    """Drop the lines from a ``begin`` marker to its ``end`` marker; put ``stub`` there."""
    out: list[str] = []
    inside = found = False
    for line in source.split("\n"):
        mark = _marker(line)
        if mark == begin:
            inside = found = True
            if stub is not None:
                indent = line[:len(line) - len(line.lstrip())]
                out.extend(indent + s for s in stub.split("\n"))
        elif mark == end:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out), found


def student_notebook(nb: NotebookNode, name: str = "notebook") -> NotebookNode:
    """The student version of an instructor notebook (a new notebook; ``nb`` is kept).

    Solution regions become :data:`CODE_STUB`, solution cells without markers
    are replaced as a whole, hidden tests are removed, outputs and execution
    counts are cleared, graded cells are made undeletable and read-only
    (``metadata.deletable``/``editable``, as nbgrader's LockCells does).

    Raises:
        ValueError: see :func:`check_assignment`.
    """
    check_assignment(nb, name)
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if is_solution_cell(cell):
            if cell.cell_type == "code":
                cell.source, found = _remove_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION,
                                                     CODE_STUB)
                if not found:
                    cell.source = CODE_STUB
            else:
                cell.source = TEXT_STUB
        if is_graded_cell(cell):
            cell.source, _ = _remove_regions(cell.source, BEGIN_HIDDEN_TESTS, END_HIDDEN_TESTS,
                                             None)
            cell.source = cell.source.rstrip("\n")
            cell.metadata["deletable"] = False
            cell.metadata["editable"] = False
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    out.metadata["nninvert_assignment"] = {"name": Path(name).stem,
                                           "generated_by": "nninvert_lib.assignments"}
    return out


def make_student_version(src: str | Path, dst: str | Path) -> Path:
    """Write the student version of the instructor notebook ``src`` to ``dst``.

    Args:
        src: the instructor notebook.
        dst: a file, or an existing folder (the file keeps ``src``'s name).

    Returns:
        the path written.

    Raises:
        ValueError: see :func:`check_assignment`; ``dst`` is ``src``.
        FileNotFoundError: ``src`` does not exist.
    """
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        dst = dst / src.name
    if dst.resolve() == src.resolve():
        raise ValueError(f"the student version would overwrite the instructor notebook {src}")
    nb = _nbformat().read(src, as_version=4)
    student = student_notebook(nb, src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _nbformat().write(student, dst)
    return dst


def make_student_versions(src_dir: str | Path = ASSIGNMENTS_DIR,
                          dst_dir: str | Path = "_build/assignments/student") -> list[Path]:
    """Student versions of every ``*.ipynb`` in ``src_dir``, written to ``dst_dir``.

    Raises:
        ValueError: ``src_dir`` holds no notebook, or one is malformed
            (:func:`check_assignment`).
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    sources = sorted(p for p in src_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not sources:
        raise ValueError(f"no assignment notebooks (*.ipynb) in {src_dir}")
    dst_dir.mkdir(parents=True, exist_ok=True)
    return [make_student_version(p, dst_dir / p.name) for p in sources]


# --------------------------------------------------------------------------- grading


def restore_tests(submission: NotebookNode, source: NotebookNode) -> tuple[NotebookNode, list[str]]:
    """Overwrite the graded cells of ``submission`` with ``source``'s, by grade id.

    This is nbgrader's OverwriteCells step: the instructor's tests (hidden ones
    included) and points are what count, whatever the submission holds. Only
    the first cell with a grade id is graded; copies and graded cells the
    source does not have are kept as ordinary cells.

    Returns:
        the new notebook, and the grade ids of ``source``'s graded cells that
        the submission lacks (they score zero).
    """
    out = copy.deepcopy(submission)
    reference = {_meta(c)["grade_id"]: c for c in source.cells
                 if is_graded_cell(c) and "grade_id" in _meta(c)}
    present = set()
    for i, cell in enumerate(out.cells):
        gid = _meta(cell).get("grade_id")
        if gid in reference and gid not in present:
            new = copy.deepcopy(reference[gid])
            if new.cell_type == "code":
                new.outputs, new.execution_count = [], None
            out.cells[i] = new
            present.add(gid)
        elif is_graded_cell(cell):
            # a copy of a graded cell, or one the instructor never wrote: it earns nothing
            cell.metadata["nbgrader"]["grade"] = False
    return out, [g for g in reference if g not in present]


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any] | None) -> NotebookNode:
    """Insert a cell setting ``parameters`` after the cell tagged ``parameters``.

    Papermill's convention: the injected cell is tagged ``injected-parameters``.

    Raises:
        ValueError: a parameter name that is not a Python identifier, or no cell
            tagged ``parameters``.
    """
    if not parameters:
        return nb
    bad = [k for k in parameters if not str(k).isidentifier()]
    if bad:
        raise ValueError(f"parameter names must be Python identifiers, got {bad}")
    index = next((i for i, c in enumerate(nb.cells)
                  if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("cannot set parameters: no cell is tagged 'parameters'")
    lines = ["# Parameters injected by the autograder"]
    lines += [f"{k} = {v!r}" for k, v in parameters.items()]
    cell = _nbformat().v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


def _has_code(source: str) -> bool:
    """Whether ``source`` holds anything but comments and blank lines."""
    return any(line.strip() and not line.strip().startswith("#") for line in source.split("\n"))


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def score_cell(cell: NotebookNode) -> tuple[float | None, str | None]:
    """Points earned by an executed graded cell, and why points were lost.

    nbgrader's ``determine_grade``: a code cell scores 0 if an output is an
    error or a stderr stream; else its first displayed value, when that is a
    number in ``[0, points]`` (partial credit; other values count as full
    credit); else full points. A markdown cell needs a person: ``None``.
    """
    points = float(_meta(cell)["points"])
    if cell.cell_type != "code":
        return None, "needs manual grading"
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            message = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
            return 0.0, message.rstrip(":")
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            return 0.0, "wrote to stderr: " + _text(output.get("text", "")).strip()[:500]
    for output in cell.get("outputs", []):
        if output.get("output_type") == "execute_result":
            value = _text(output.get("data", {}).get("text/plain", "")).strip()
            try:
                partial = float(value)
            except ValueError:
                break
            if 0.0 <= partial <= points:
                return partial, None if partial == points else f"partial credit {partial:g}"
            break
    return points, None


def _execute(nb: NotebookNode, cwd: Path, timeout: int, kernel_name: str) -> str | None:
    """Run every cell (errors do not stop the run); the reason the kernel failed, or None."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    from .kernelpoll import sliced_channel_polls

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True, record_timing=False,
                            shutdown_kernel="immediate",   # outputs are in; saves ~3 s
                            resources={"metadata": {"path": str(cwd)}})
    try:
        with sliced_channel_polls():
            client.execute()
    except DeadKernelError as exc:
        return f"the kernel died: {exc}"
    except Exception as exc:   # noqa: BLE001 - report whatever stopped the run
        return f"{type(exc).__name__}: {exc}"
    return None


def grade_notebook(path: str | Path, source: str | Path | None = None, *,
                   parameters: Mapping[str, Any] | None = None, timeout: int = 300,
                   kernel_name: str = "python3", out: str | Path | None = None,
                   executed: str | Path | None = None) -> dict[str, Any]:
    """Execute a submitted notebook headless and score its graded cells.

    Args:
        path: the submission.
        source: the instructor notebook whose graded cells (hidden tests
            included) replace the submission's; ``None``: the submission's own
            visible tests are used (a self-check, ``tests_from="submission"``).
        parameters: values for the cell tagged ``parameters`` (e.g.
            ``{"profile": "smoke"}``), injected as papermill does.
        timeout: seconds allowed per cell; a cell that runs longer is
            interrupted and fails.
        kernel_name: the Jupyter kernel to run it in.
        out: write the report there as JSON.
        executed: also save the executed notebook there (for feedback).

    Returns:
        the report: ``score``, ``max_score``, ``tasks`` (per task ``score``,
        ``max_score``, ``passed``, ``total``), ``tests`` (per graded cell
        ``grade_id``, ``task``, ``points``, ``max_points``, ``status`` in
        ``passed | partial | failed | missing | manual | hidden``, ``message``;
        ``hidden``: a graded cell that holds only hidden tests, graded without
        ``source``),
        ``kernel_error``, ``seconds``, and where the tests came from.

    Raises:
        ValueError: the tests' notebook is malformed (see
            :func:`check_assignment`, e.g. no graded cell), or ``parameters``
            cannot be injected.
        FileNotFoundError: ``path`` or ``source`` does not exist.
    """
    path = Path(path)
    submission = _nbformat().read(path, as_version=4)
    if source is not None:
        source = Path(source)
        reference = _nbformat().read(source, as_version=4)
        check_assignment(reference, source.name)
        nb, missing = restore_tests(submission, reference)
    else:
        check_assignment(submission, path.name)
        nb, missing = copy.deepcopy(submission), []
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    inject_parameters(nb, parameters)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nninvert-grade-") as cwd:
        kernel_error = _execute(nb, Path(cwd), timeout, kernel_name)
    seconds = time.perf_counter() - start

    tests: list[dict[str, Any]] = []
    for cell in nb.cells:
        if not is_graded_cell(cell):
            continue
        gid = _meta(cell)["grade_id"]
        max_points = float(_meta(cell)["points"])
        ran = cell.cell_type != "code" or cell.get("execution_count") is not None
        hidden = cell.cell_type == "code" and not _has_code(cell.source)
        if hidden:
            # a student version's cell whose checks are all hidden: only the instructor's
            # notebook can run it (grade with source=...)
            points, message = 0.0, "this test is hidden; it runs when graded with the source"
        elif not ran:
            points, message = 0.0, kernel_error or "the cell did not run"
        else:
            points, message = score_cell(cell)
        if hidden:
            status = "hidden"
        elif points is None:
            status = "manual"
        elif points == max_points:
            status = "passed"
        elif points > 0:
            status = "partial"
        else:
            status = "failed"
        tests.append({"grade_id": gid, "task": task_of(gid), "points": points,
                      "max_points": max_points, "status": status, "message": message})
    if source is not None:
        points_of = {_meta(c)["grade_id"]: float(_meta(c)["points"])
                     for c in reference.cells if is_graded_cell(c)}
        for gid in missing:
            tests.append({"grade_id": gid, "task": task_of(gid), "points": 0.0,
                          "max_points": points_of[gid], "status": "missing",
                          "message": "this graded cell was deleted from the submission"})

    tasks: dict[str, dict[str, Any]] = {}
    for t in tests:
        entry = tasks.setdefault(t["task"], {"score": 0.0, "max_score": 0.0, "passed": 0,
                                             "total": 0})
        entry["score"] += t["points"] or 0.0
        entry["max_score"] += t["max_points"]
        entry["passed"] += t["status"] == "passed"
        entry["total"] += 1
    report = {
        "notebook": str(path),
        "assignment": submission.metadata.get("nninvert_assignment", {}).get("name", path.stem),
        "tests_from": "source" if source is not None else "submission",
        "source": None if source is None else str(source),
        "score": sum(t["points"] or 0.0 for t in tests),
        "max_score": sum(t["max_points"] for t in tests),
        "tasks": tasks,
        "tests": tests,
        "needs_manual_grading": [t["grade_id"] for t in tests if t["status"] == "manual"],
        "kernel_error": kernel_error,
        "parameters": dict(parameters or {}),
        "seconds": round(seconds, 2),
        "grader": "nninvert_lib.assignments (nbgrader conventions, metadata schema 3)",
    }
    if out is not None:
        _write_json(out, report)
    if executed is not None:
        Path(executed).parent.mkdir(parents=True, exist_ok=True)
        _nbformat().write(nb, executed)
    return report


def _write_json(path: str | Path, report: Mapping[str, Any]) -> None:
    """Write a grading ``report`` to ``path`` as JSON, creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def default_source(submission: str | Path) -> Path | None:
    """The instructor notebook for ``submission`` in :data:`ASSIGNMENTS_DIR`, if there.

    Looked up by the assignment name the student version records, else by the
    file name.
    """
    submission = Path(submission)
    names = [submission.stem]
    try:
        meta = _nbformat().read(submission, as_version=4).metadata.get("nninvert_assignment", {})
        names.insert(0, meta.get("name", submission.stem))
    except (OSError, ValueError):
        pass
    for name in names:
        candidate = ASSIGNMENTS_DIR / f"{name}.ipynb"
        if candidate.is_file() and candidate.resolve() != submission.resolve():
            return candidate
    return None


# --------------------------------------------------------------------------- command line


def _summary(report: Mapping[str, Any]) -> str:
    lines = [f"{report['assignment']}: {report['score']:g} / {report['max_score']:g} points "
             f"(tests from the {report['tests_from']}, {report['seconds']:.1f} s)"]
    for task, entry in report["tasks"].items():
        lines.append(f"  {task:<12} {entry['score']:g} / {entry['max_score']:g}  "
                     f"({entry['passed']}/{entry['total']} tests passed)")
    for t in report["tests"]:
        if t["status"] != "passed":
            lines.append(f"    {t['grade_id']}: {t['status']}: {t['message']}")
    if report["kernel_error"]:
        lines.append(f"  kernel: {report['kernel_error']}")
    return "\n".join(lines)


def _cmd_make(args: argparse.Namespace) -> int:
    src = Path(args.src)
    try:
        if src.is_dir():
            written = make_student_versions(src, args.dst)
        else:
            written = [make_student_version(src, args.dst)]
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote {p}")
    return 0


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _cmd_grade(args: argparse.Namespace) -> int:
    parameters: dict[str, Any] = {}
    if args.profile:
        parameters["profile"] = args.profile
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --param expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        parameters[key] = _parse_value(value)
    failed: list[str] = []
    for submission in args.submissions:
        out = None
        if args.out:
            out = (Path(args.out) / f"{Path(submission).stem}.json"
                   if len(args.submissions) > 1 or Path(args.out).is_dir() else args.out)
        try:
            if not Path(submission).is_file():
                raise FileNotFoundError("no such notebook")
            source = args.source
            if source is None and not args.visible_only:
                source = default_source(submission)
                if source is None:
                    print(f"note: no instructor notebook found for {submission}; grading "
                          f"with its own visible tests (pass --source)", file=sys.stderr)
            report = grade_notebook(submission, source, parameters=parameters,
                                    timeout=args.timeout, out=out)
        except (ValueError, FileNotFoundError) as exc:
            # one unreadable submission must not stop the grading of the others
            print(f"error: {submission}: {exc}", file=sys.stderr)
            failed.append(str(submission))
            if out:
                _write_json(out, {"notebook": str(submission), "score": None, "error": str(exc)})
            continue
        print(_summary(report))
        if out:
            print(f"  report: {out}")
    if failed:
        print(f"{len(failed)} of {len(args.submissions)} submission(s) could not be graded: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add the ``make`` and ``grade`` subcommands to ``parser`` (also used by ``nninvert``)."""
    sub = parser.add_subparsers(dest="assignments_command", required=True)
    p = sub.add_parser("make", help="write the student versions (solutions removed)",
                       description="Write the student version of an instructor notebook, or of "
                       "every notebook in a folder: solutions replaced by stubs, hidden tests "
                       "removed, outputs cleared.")
    p.add_argument("src", nargs="?", default=str(ASSIGNMENTS_DIR),
                   help="instructor notebook or folder (default notebooks/assignments)")
    p.add_argument("dst", nargs="?", default="_build/assignments/student",
                   help="output file or folder (default _build/assignments/student)")
    p.set_defaults(func=_cmd_make)

    p = sub.add_parser("grade", help="execute and score submitted notebooks (JSON report)",
                       description="Run submitted notebooks headless, with the instructor's "
                       "graded cells put back, and score them. A submission that cannot be "
                       "read is reported (its JSON report holds the error) and the others are "
                       "still graded; the exit status is then 2.")
    p.add_argument("submissions", nargs="+", metavar="NOTEBOOK", help="submitted notebooks")
    p.add_argument("--source", default=None,
                   help="the instructor notebook (default: the one of the same assignment in "
                   "notebooks/assignments, when there)")
    p.add_argument("--visible-only", action="store_true",
                   help="grade with the submission's own visible tests (a self-check)")
    p.add_argument("--out", default=None,
                   help="JSON report file (a folder when grading several notebooks)")
    p.add_argument("--profile", default=None, help="value of the notebook's `profile` parameter")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="another notebook parameter (VALUE read as JSON when it parses)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    p.set_defaults(func=_cmd_grade)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m nninvert_lib.assignments``."""
    parser = argparse.ArgumentParser(
        prog="python -m nninvert_lib.assignments",
        description="Coursework: student versions of the assignment notebooks and an autograder "
        "(nbgrader's conventions).")
    add_subcommands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
