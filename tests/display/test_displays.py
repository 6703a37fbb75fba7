"""Every display renders the same board: live terminal table, notebook HTML, log lines, JSON lines."""

from __future__ import annotations

import io
import json

from multistore.display import live_display, resolve_mode
from multistore.display.notebook import results_html
from multistore.display.terminal import results_table
from multistore.status import Status, StatusBoard


def run_board(mode: str) -> str:
    stream = io.StringIO()
    board = StatusBoard(["cube_a", "cube_b"])
    with live_display(board, mode, stream=stream):
        board.update("cube_a", status=Status.OPENING)
        board.update("cube_a", status=Status.WRITING, progress=0.5, output="out/cube_a.zarr")
        board.update("cube_a", status=Status.COMPLETED, message="2 var(s)")
        board.update("cube_b", status=Status.FAILED, message="SourceOpenError: no such file x.tif")
    return stream.getvalue()


def test_log_lines_and_summary():
    text = run_board("log")
    assert "cube_a: opening" in text
    assert "cube_a: writing 50%" in text
    assert "cube_b: failed - SourceOpenError: no such file x.tif" in text
    summary = text.split("summary:")[1]
    assert "cube_a" in summary and "completed" in summary and "out/cube_a.zarr" in summary


def test_json_lines_are_machine_readable():
    lines = [json.loads(line) for line in run_board("json").splitlines()]
    assert lines[0] == {**lines[0], "event": "status", "dataset": "cube_a", "status": "opening"}
    assert lines[-1]["event"] == "summary"
    final = {r["dataset"]: r["status"] for r in lines[-1]["results"]}
    assert final == {"cube_a": "completed", "cube_b": "failed"}


def test_rich_summary_table_is_printed():
    text = run_board("rich")
    assert "summary" in text and "cube_b" in text and "failed" in text


def test_tables_for_terminal_and_notebook():
    board = StatusBoard(["a"])
    board.update("a", status=Status.WRITING, progress=0.25)
    assert results_table(board.results(), "t").row_count == 1
    html = results_html(board.results(), "run <1>")
    assert "<progress value='25'" in html and "run &lt;1&gt;" in html


def test_auto_mode_is_log_when_not_a_terminal():
    assert resolve_mode("auto", io.StringIO()) == "log"
    assert resolve_mode("json") == "json"


def test_run_report_renders_in_notebooks():
    from multistore.generate import RunReport
    from multistore.status import DatasetResult

    report = RunReport((DatasetResult("a", Status.FAILED, message="boom <x>"),))
    assert "boom &lt;x&gt;" in report._repr_html_() and report.exit_code == 1
