"""The page in a real browser: Debian's Chromium driven by Playwright.

Asks an in-scope and an out-of-scope question, follows a citation into the sources
panel and into the Guide view, reads the guide with the keyboard, uploads a Markdown file
about a made-up topic, asks about it and finds it in the guide's contents. Screenshots go
to tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_ui import running_app, stop_app  # the same app process for the whole session

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ANSWER_TIMEOUT_MS = 90_000

ZORBLAX_MD = """\
# Zorblax tuning

## What Zorblax tuning is

Zorblax tuning is a made-up fine-tuning method that adjusts only the zorblax layers of a
language model with purple gradients. It exists only to test document uploads in ftchat.
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.getbasetemp() / "ftchat-app"
    root.mkdir(exist_ok=True)
    url = running_app(root)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                      permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("#ft-question textarea")
        page.errors = errors
        yield page
        browser.close()
    stop_app()


@pytest.fixture(autouse=True)
def back_to_chat(request):
    """Every test starts on the Chat tab, even after a guide test failed halfway."""
    yield
    page = request.getfixturevalue("page")
    if not page.locator("[role=tab][aria-selected=true]:has-text('Chat')").count():
        open_tab(page, "Chat")


def ask(page, question: str) -> None:
    bots_before = page.locator("#ft-chat .message.bot").count()
    page.fill("#ft-question textarea", question)
    page.click("#ft-send")
    page.wait_for_function(
        """(n) => document.querySelectorAll('#ft-chat .message.bot').length > n""",
        arg=bots_before, timeout=ANSWER_TIMEOUT_MS,
    )
    wait_until_answered(page)


def wait_until_answered(page) -> None:
    # Streaming shows a cursor ▍ and status notes; the final answer has neither.
    page.wait_for_function(
        """() => {
            const bots = document.querySelectorAll('#ft-chat .message.bot');
            if (!bots.length) return false;
            const text = bots[bots.length - 1].innerText;
            const busy = /▍|Waiting for my turn|Searching the guide|Writing an answer|still loading|…$/;
            return !busy.test(text.trim());
        }""",
        timeout=ANSWER_TIMEOUT_MS,
    )


def last_answer(page) -> str:
    return page.locator("#ft-chat .message.bot").last.inner_text()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_selector(f"[role=tab][aria-selected=true]:has-text('{name}')", timeout=10_000)


def wait_for_section(page, title: str) -> None:
    """The Guide tab is shown with this section open, its heading focused."""
    page.wait_for_function(
        """(title) => {
            const heading = document.querySelector('#ft-guide-section h2');
            const tab = document.querySelector('[role=tab][aria-selected=true]');
            return heading && heading.innerText.trim() === title && tab && /Guide/.test(tab.innerText)
                && document.activeElement === heading;
        }""",
        arg=title, timeout=15_000,
    )


def section_crumbs(page) -> list[str]:
    steps = page.locator("#ft-guide-section nav[aria-label='Heading path'] li")
    return [t.strip() for t in steps.all_inner_texts()]


def test_in_scope_answer_has_citations_linked_to_the_sources_panel(page):
    ask(page, "What is QLoRA?")
    answer = last_answer(page)
    assert re.search(r"\[\d+\]", answer), answer
    cites = page.locator("#ft-chat .message.bot").last.locator("a.cite")
    assert cites.count() >= 1
    target = cites.first.get_attribute("href")
    assert target and target.startswith("#src-")
    card = page.locator(target)
    assert card.count() == 1
    # The card shows the heading path, file and line, score, and highlighted evidence.
    assert "›" in card.locator(".src-head").inner_text()
    meta = card.locator(".src-meta").inner_text()
    assert re.search(r"corpus/\S+\.md · line \d+", meta) and "similarity" in meta
    assert card.locator(".src-text mark").count() >= 1
    cites.first.click()
    page.wait_for_selector(f"{target}.flash", timeout=5000)

    # Copy gives plain text: the [n] markers without the link markup.
    copy = page.locator("#ft-chat button[aria-label='Copy message']").last
    copy.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert re.search(r"\[\d+\]", copied) and "<a" not in copied, copied

    # The toggle adds the retrieved passages that were not cited.
    cards_before = page.locator("#ft-sources details[open] .src-card").count()
    page.click("#ft-show-all input")
    page.wait_for_function(
        "(n) => document.querySelectorAll('#ft-sources details[open] .src-card').length > n",
        arg=cards_before, timeout=10_000,
    )
    page.screenshot(path=str(ARTIFACTS / "browser-in-scope.png"))
    page.click("#ft-show-all input")


def test_a_citation_opens_its_section_in_the_guide(page):
    if not page.locator("#ft-sources .src-card").count():
        ask(page, "What is QLoRA?")
    card = page.locator("#ft-sources details[open] .src-card").first
    heading_path = [h.strip() for h in card.locator(".src-head").inner_text().split("]", 1)[1].split("›")]
    quotes = [" ".join(q.split()) for q in card.locator(".src-text mark").all_inner_texts()]
    assert quotes
    link = card.get_by_role("link", name=re.compile("^Open .* in the guide$"))
    assert link.inner_text() == "Open in the guide"
    link.click()
    wait_for_section(page, heading_path[-1])
    assert section_crumbs(page) == heading_path
    # The whole section: the evidence the card highlighted is in it, with its file and line.
    text = " ".join(page.locator("#ft-guide-section .guide-text").inner_text().split())
    assert all(q in text for q in quotes), (quotes, text)
    meta = page.locator("#ft-guide-section .guide-meta").inner_text()
    assert re.fullmatch(r"corpus/\S+\.md, line \d+", meta), meta
    assert page.locator("#ft-guide-contents [aria-current=true]").inner_text() == heading_path[-1]
    page.screenshot(path=str(ARTIFACTS / "browser-guide-from-citation.png"))
    open_tab(page, "Chat")


def test_out_of_scope_question_offers_closest_sections(page):
    # A near miss: declined, with sections that come close (a question far from the guide,
    # "What is the capital of France?", gets none; see test_answer.py).
    ask(page, "How do I tune the strings of my guitar?")
    assert "doesn't cover" in last_answer(page)
    assert page.locator("#ft-sources details[open] .src-card").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "browser-out-of-scope.png"))
    # Each closest section also opens in the guide.
    closest = page.locator("#ft-chat .message.bot").last.locator("a.to-guide")
    assert closest.count() >= 1
    title = closest.first.inner_text().split("›")[-1].strip()
    closest.first.click()
    wait_for_section(page, title)
    open_tab(page, "Chat")
    # One click on a closest section asks about it.
    bots = page.locator("#ft-chat .message.bot").count()
    page.locator("#ft-chat button.option").first.click()
    page.wait_for_function(
        "(n) => document.querySelectorAll('#ft-chat .message.bot').length > n",
        arg=bots, timeout=ANSWER_TIMEOUT_MS,
    )
    wait_until_answered(page)
    assert "Tell me about" in page.locator("#ft-chat .message.user").last.inner_text()


def test_the_guide_can_be_read_with_the_keyboard(page):
    open_tab(page, "Guide")
    nav = page.locator("#ft-guide-contents nav")
    assert nav.get_attribute("aria-labelledby") == "guide-toc-title"
    assert nav.get_by_role("heading", name="Contents", level=2).count() == 1
    parts = nav.get_by_role("heading", level=3).all_inner_texts()
    assert parts == ["About this guide", "Key concepts", "Fine-tuning strategies", "Added documents"]

    # From the Guide tab, Tab walks into the contents in reading order; Enter opens a term.
    page.get_by_role("tab", name="Guide").focus()
    page.keyboard.press("Tab")
    first = page.evaluate("document.activeElement.innerText")
    assert first == "About this guide"
    term = nav.get_by_role("link", name="Gradient accumulation", exact=True)
    term.focus()
    page.keyboard.press("Enter")
    wait_for_section(page, "Gradient accumulation")
    assert section_crumbs(page) == ["Key concepts", "Training process", "Gradient accumulation"]
    text = page.locator("#ft-guide-section .guide-text").inner_text()
    assert text.startswith("Gradient accumulation simulates a large batch")
    assert "total token count is more accurate." in text  # the whole section, to its end
    # The heading path's steps are links: one opens the category, which lists its terms.
    page.locator("#ft-guide-section nav[aria-label='Heading path'] a", has_text="Training process").focus()
    page.keyboard.press("Enter")
    wait_for_section(page, "Training process")
    below = page.locator("#ft-guide-section").get_by_role("heading", name="In this section", level=3)
    assert below.count() == 1
    assert page.locator("#ft-guide-section ul a", has_text="Gradient accumulation").count() == 1
    page.screenshot(path=str(ARTIFACTS / "browser-guide.png"))
    # In a phone-sized window the contents, the section and the footer stack without overlap.
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        boxes = [page.locator(sel).bounding_box() for sel in
                 ("#ft-guide-contents nav", "#ft-guide-section article", "#ft-footer")]
        assert all(boxes), boxes
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                apart = (a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"]
                         or a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"])
                assert apart, (a, b)
        page.screenshot(path=str(ARTIFACTS / "browser-guide-narrow.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})

    # The address is in the URL: opened in a new tab, it shows the same section.
    other = page.context.new_page()
    other.goto(page.url)
    wait_for_section(other, "Training process")
    other.close()
    open_tab(page, "Chat")


def test_upload_a_document_and_ask_about_it(page, tmp_path):
    good = tmp_path / "zorblax notes.md"
    good.write_text(ZORBLAX_MD, encoding="utf-8")
    fake = tmp_path / "fake.pdf"
    fake.write_text("This is not really a PDF.", encoding="utf-8")

    page.click("#ft-upload button.label-wrap, #ft-upload > button")
    page.set_input_files("#ft-files input[type=file]", [str(good), str(fake)])
    page.click("#ft-add")
    page.wait_for_function(
        "() => /Added zorblax notes\\.md/.test(document.querySelector('#ft-upload-result').innerText)",
        timeout=ANSWER_TIMEOUT_MS,
    )
    result = page.locator("#ft-upload-result").inner_text()
    assert "zorblax_notes.md" in result
    assert re.search(r"Rejected fake\.pdf:.*not a PDF", result), result
    page.screenshot(path=str(ARTIFACTS / "browser-upload.png"))

    ask(page, "What is Zorblax tuning?")
    answer = last_answer(page)
    assert "Zorblax" in answer and re.search(r"\[\d+\]", answer), answer
    card = page.locator("#ft-sources details[open] .src-card").first
    assert "uploads/zorblax_notes.md" in card.locator(".src-meta").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser-upload-answer.png"), full_page=True)
    assert not page.errors, page.errors


def test_added_documents_appear_in_the_guide(page):
    open_tab(page, "Guide")
    contents = page.locator("#ft-guide-contents nav")
    documents = contents.get_by_role("heading", name="Added documents", level=3)
    assert documents.count() == 1
    entry = contents.get_by_role("link", name="What Zorblax tuning is")
    assert entry.count() == 1
    entry.click()
    wait_for_section(page, "What Zorblax tuning is")
    assert section_crumbs(page) == ["zorblax_notes.md", "Zorblax tuning", "What Zorblax tuning is"]
    assert "purple gradients" in page.locator("#ft-guide-section .guide-text").inner_text()
    assert "uploads/zorblax_notes.md" in page.locator("#ft-guide-section .guide-meta").inner_text()
    open_tab(page, "Chat")
    assert not page.errors, page.errors
