"""The page's Guide view: the table of contents and one whole section at a time.

    with gr.Tabs() as tabs:
        with gr.Tab("Chat", id="chat"): ...
        guide = guide_tab(app)              # the "Guide" tab
    wire_guide(app, guide, tabs)            # every "#guide=" link on the page opens there

The data comes from `Assistant.contents()` and `Assistant.section()`; this module only
renders it. Every link to a section, in the contents, a citation card or a declined
answer, is a plain `<a href="#guide=...">` (render.section_href): keyboard and screen
readers treat it as the link it is, and the address doubles as a deep link that a reload
or a shared URL opens again. One always-present bridge element turns a click on any such
link into a call to Python.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import gradio as gr
from markdown_it import MarkdownIt

from ftchat.documents.book import Contents, Entry, GuideSection, SectionNotFound
from ftchat.page.chat import ChatApp
from ftchat.page.render import parse_address, section_href, shown_source

GUIDE_TAB = "guide"

# Section text is Markdown from the guide or from an uploaded file: raw HTML stays text,
# and images become links so that no document makes the page fetch anything.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable("image")

CSS = """
.guide-toc { max-height: 75vh; overflow-y: auto; padding-right: 6px; }
.guide-toc h2, .guide-section h2 { margin-top: 0.2em; }
.guide-toc h3 { font-size: 1em; margin: 0.9em 0 0.2em; }
.guide-toc ul { list-style: none; margin: 0 0 0 0.9em; padding: 0; }
.guide-toc > ul { margin-left: 0; }
.guide-toc li { margin: 0.12em 0; }
.guide-toc a, .guide-section a.to-guide { text-decoration: none; }
.guide-toc a:hover, .guide-toc a:focus-visible { text-decoration: underline; }
.guide-toc a[aria-current="true"] { font-weight: 700; }
.guide-crumbs ol { list-style: none; display: flex; flex-wrap: wrap; padding: 0;
                   margin: 0 0 0.3em; font-size: 0.88em; }
.guide-crumbs li + li::before { content: "›"; margin: 0 0.4em; opacity: 0.7; }
.guide-meta { font-size: 0.82em; opacity: 0.75; margin: 0 0 0.8em; }
.guide-section h2:focus-visible { outline: 2px solid #6366f1; outline-offset: 3px; }
a.to-guide { font-size: 0.85em; }
"""

# Runs once, in the bridge element that is always on the page (a tab's children are only
# mounted once the tab is first shown). A click on any "#guide=" link, wherever it is,
# becomes the bridge's click event with the address; an address in the URL when the page
# loads is opened too. The opened section's heading takes the focus (see _SECTION_JS).
_BRIDGE_JS = """
const prefix = "#guide=";
function open(address) {
  window.ftchatFocusSection = true;
  history.replaceState(null, "", prefix + address);
  trigger("click", {address: address});
}
document.addEventListener("click", function (event) {
  const link = event.target.closest ? event.target.closest('a[href^="#guide="]') : null;
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  open(link.getAttribute("href").slice(prefix.length));
}, true);
if (location.hash.startsWith(prefix)) {
  setTimeout(function () { open(location.hash.slice(prefix.length)); }, 0);
}
"""

# The section panel's heading takes the focus once an opened section is shown; the Guide
# tab may still be hidden when the new section arrives, so wait for it to be visible.
_SECTION_JS = """
function focusHeading(tries) {
  if (!window.ftchatFocusSection) return;
  const heading = element.querySelector("h2");
  if (!heading || !heading.checkVisibility()) {
    if (tries < 50) requestAnimationFrame(function () { focusHeading(tries + 1); });
    return;
  }
  window.ftchatFocusSection = false;
  heading.focus({preventScroll: true});
  element.scrollIntoView({block: "nearest"});
  const entry = document.querySelector('#ft-guide-contents [aria-current="true"]');
  if (entry) entry.scrollIntoView({block: "nearest"});
}
focusHeading(0);
watch("value", function () { focusHeading(0); });
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


# --- Rendering ----------------------------------------------------------------------------


def _entries(entries: Sequence[Entry], current: tuple | None) -> str:
    if not entries:
        return ""
    items = []
    for e in entries:
        here = ' aria-current="true"' if current == (e.document, e.path) else ""
        link = f'<a href="{section_href(e.source, e.path)}"{here}>{_esc(e.title)}</a>'
        items.append(f"<li>{link}{_entries(e.children, current)}</li>")
    return f"<ul>{''.join(items)}</ul>"


def contents_html(contents: Contents, current: GuideSection | None = None) -> str:
    """The table of contents: each part a heading with its categories and terms below, then
    the added documents under a heading of their own. The open section is marked."""
    here = (current.document, current.path) if current else None
    parts = []
    for part in contents.guide:
        mark = ' aria-current="true"' if here == (None, part.path) else ""
        parts.append(f'<h3><a href="{section_href(part.source, part.path)}"{mark}>{_esc(part.title)}</a></h3>'
                     f"{_entries(part.children, here)}")
    parts.append("<h3>Added documents</h3>")
    if contents.documents:
        parts.append(_entries(contents.documents, here))
    else:
        parts.append('<p class="guide-meta">Documents added on the Chat tab (Add documents) '
                     "appear here.</p>")
    return (f'<nav class="guide-toc" aria-labelledby="guide-toc-title">'
            f'<h2 id="guide-toc-title">Contents</h2>{"".join(parts)}</nav>')


def _crumbs(section: GuideSection) -> str:
    source = section.places[0].source if section.places else (section.document or "")
    steps: list[tuple[str, tuple[str, ...]]] = []
    if section.document:
        steps.append((section.document.rsplit("/", 1)[-1], ()))
    steps += [(heading, section.path[: i + 1]) for i, heading in enumerate(section.path)]
    items = [f'<li><a href="{section_href(section.document or source, path)}">{_esc(label)}</a></li>'
             for label, path in steps[:-1]]
    if steps:
        items.append(f'<li aria-current="location">{_esc(steps[-1][0])}</li>')
    return f'<nav class="guide-crumbs" aria-label="Heading path"><ol>{"".join(items)}</ol></nav>'


def section_html(section: GuideSection) -> str:
    """A whole section: its heading path (each step a link), where it is, its text and
    the sections under it."""
    title = section.path[-1] if section.path else (section.document or "").rsplit("/", 1)[-1]
    places = " · ".join(f"{_esc(shown_source(p.source))}, {_esc(p.location)}" for p in section.places)
    body = _MARKDOWN.render(section.text) if section.text.strip() else ""
    below = ""
    if section.subsections:
        below = f'<h3>In this section</h3>{_entries(section.subsections, None)}'
    return (f'<article class="guide-section" aria-labelledby="guide-section-title">{_crumbs(section)}'
            f'<h2 id="guide-section-title" tabindex="-1">{_esc(title)}</h2>'
            f'{f"<p class=guide-meta>{places}</p>" if places else ""}'
            f'<div class="guide-text">{body}</div>{below}</article>')


def message_html(title: str, text: str) -> str:
    """The section panel before anything is opened, or when a link leads nowhere."""
    return (f'<article class="guide-section" aria-labelledby="guide-section-title">'
            f'<h2 id="guide-section-title" tabindex="-1">{_esc(title)}</h2><p>{_esc(text)}</p></article>')


WELCOME = ("Read the guide", "Pick a part, a category or a term in the contents to read its whole "
           "section. “Open in the guide” on a source in the Chat tab opens its section here.")


# --- The tab ------------------------------------------------------------------------------


@dataclass
class GuideControls:
    contents: gr.HTML
    section: gr.HTML


def guide_tab(app: ChatApp) -> GuideControls:
    """The Guide tab (call inside gr.Tabs)."""
    with gr.Tab("Guide", id=GUIDE_TAB, elem_id="ft-guide-tab"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                contents = gr.HTML(lambda: contents_html(app.assistant.contents()),
                                   elem_id="ft-guide-contents", js_on_load=None)
            with gr.Column(scale=2, min_width=340):
                section = gr.HTML(message_html(*WELCOME), elem_id="ft-guide-section",
                                  js_on_load=_SECTION_JS)
    return GuideControls(contents=contents, section=section)


def open_address(app: ChatApp, address: str) -> tuple[str, str]:
    """(section panel, contents) for a link's address; a clear message when it leads nowhere."""
    contents = app.assistant.contents()
    try:
        source, path = parse_address(address)
        section = app.assistant.section(path, source)
    except SectionNotFound as exc:
        return message_html("Section not found", str(exc)), contents_html(contents)
    return section_html(section), contents_html(contents, section)


def wire_guide(app: ChatApp, guide: GuideControls, tabs: gr.Tabs) -> None:
    """Add the bridge (outside the tabs, so it is there before the Guide tab is first
    shown): a click on any "#guide=" link opens its section in the Guide tab."""
    bridge = gr.HTML("", visible="hidden", elem_id="ft-guide-bridge", js_on_load=_BRIDGE_JS)

    def on_open(evt: gr.EventData):
        data = evt._data if isinstance(evt._data, dict) else {}
        panel, contents = open_address(app, str(data.get("address", "")))
        return panel, contents, gr.Tabs(selected=GUIDE_TAB)

    bridge.click(on_open, None, [guide.section, guide.contents, tabs], queue=False,
                 api_visibility="private", show_progress="hidden")


def refresh_contents(app: ChatApp) -> str:
    """The contents after documents were added."""
    return contents_html(app.assistant.contents())
