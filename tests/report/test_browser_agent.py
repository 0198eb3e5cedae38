"""A 300-step agent session in the report, in a real browser: every step shows, each
response with its tool output folded beneath it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featdisco.report import build_report
from tests.report.test_browser import VIEWPORT
from tests.transcripts.test_shapes_report import build_agent_run


def test_long_agent_transcript_displays_with_tool_output(browser: Any, shots: Path, tmp_path: Path) -> None:
    run = build_agent_run(tmp_path, steps=300)
    build_report(run)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((run / "report" / "index.html").as_uri() + "#/transcripts/0")
    page.wait_for_selector("h1:has-text('Transcripts')")
    page.click("a:has-text('long')")
    page.wait_for_selector(".turn.kind-response")  # the transcript page ("Transcripts" would match a prefix)
    assert page.locator(".turn.kind-thought").count() == 300
    assert page.locator(".turn.kind-response").count() == 300
    tools = page.locator("details.tools")
    assert tools.count() == 300
    tools.last.locator("summary").click()
    assert "x = 1" in tools.last.inner_text()
    tools.last.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "agent-transcript.png"))  # the viewport: the page is very long
    assert errors == []
    context.close()
