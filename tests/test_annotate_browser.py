"""`apprentice annotate` in real headless Chromium (the system's /usr/bin/chromium driven by playwright): an annotator
opens their link, votes with the mouse and with keys, changes a vote, skips, reloads and carries on; HTML and
JavaScript inside model outputs are shown as text and run nowhere. Screenshots go to test-artifacts/ for people.
Run: python -m pytest tests/test_annotate_browser.py -q"""

from __future__ import annotations

from pathlib import Path

import pytest

from annotate_support import AnnotateServer, write_outputs
from apprentice.annotate import store

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

XSS_A = (
    "First answer {i}. <script>window.__xss = 'script'</script>\n\n"
    "<img src=x onerror=\"window.__xss = 'img'\">\n\n"
    "[click me](javascript:window.__xss='link') and <a href=\"javascript:window.__xss='a'\">raw link</a>\n\n"
    "```python\nprint('<b>kept as code</b>')\n```\n"
)
XSS_B = (
    "Second answer {i}. **bold** <svg onload=\"window.__xss = 'svg'\"></svg>\n\n"
    "![pic](javascript:window.__xss='image') <iframe src=\"javascript:window.__xss='iframe'\"></iframe>\n\n"
    "| a | b |\n|---|---|\n| <b onmouseover=\"window.__xss='cell'\">1</b> | 2 |\n"
)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_an_annotator_votes_with_mouse_and_keys_reloads_and_no_script_runs(browser, tmp_path):
    a, b = write_outputs(tmp_path / "outputs", 5, lambda i: XSS_A.format(i=i), lambda i: XSS_B.format(i=i))
    db = tmp_path / "votes.sqlite"
    with AnnotateServer(a, b, db) as server:
        connection = store.connect(db)
        link = f"{server.url}/a/{store.add_annotator(connection, 'ana')}"
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(link)
        page.wait_for_url(f"{server.url}/vote")  # the token left the address bar

        def state() -> tuple[str, int, int]:
            item = page.locator("input[name=item]").first.get_attribute("value")
            bar = page.locator("#progress")
            return item, int(bar.get_attribute("value")), int(bar.get_attribute("max"))

        def a_on_left(item: str) -> bool:
            return bool(connection.execute("SELECT a_on_left FROM assignments WHERE item_id = ?",
                                           (item,)).fetchone()[0])

        first, done, total = state()
        assert (done, total) == (0, 5)
        # payloads are visible as text; none became an element or a link
        left_and_right = page.locator("#left").inner_text() + page.locator("#right").inner_text()
        assert "<script>window.__xss = 'script'</script>" in left_and_right
        assert "<svg onload=" in left_and_right and "[click me](javascript:" in left_and_right
        assert page.locator("main script, main img, main svg, main iframe, main [onerror], main [onload]").count() == 0
        assert page.eval_on_selector_all("a", "els => els.filter(e => e.href.startsWith('javascript')).length") == 0
        assert page.locator("pre code.language-python").inner_text().strip() == "print('<b>kept as code</b>')"
        assert page.locator("table td").first.inner_text() == "<b onmouseover=\"window.__xss='cell'\">1</b>"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "annotate_vote.png"), full_page=True)

        # mouse: left is better; the vote shows as saved and the bar moves
        page.click("#vote-left")
        page.wait_for_selector("#saved")
        assert state() == (first, 1, 5)
        assert "left is better" in page.inner_text("#saved")
        # change it with a key before moving on; typing in the comment box is text, not a shortcut
        page.fill("#comment", "1 2 3 t s n: typed, not votes")
        page.press("#comment", "2")
        assert page.locator("#vote-left.chosen").count() == 1
        page.locator("#comment").blur()
        page.keyboard.press("ArrowRight")
        page.wait_for_selector("#vote-right.chosen")
        assert page.input_value("#comment") == "1 2 3 t s n: typed, not votes2"
        page.screenshot(path=str(ARTIFACTS / "annotate_voted.png"), full_page=True)
        page.keyboard.press("n")
        page.wait_for_selector("#skip")
        second, done, total = state()
        assert second != first and (done, total) == (1, 5)

        # keys only: tie, then Enter for the next item; then skip one with s
        page.keyboard.press("t")
        page.wait_for_selector("#vote-tie.chosen")
        page.keyboard.press("Enter")
        page.wait_for_selector("#skip")
        third, done, total = state()
        assert third not in (first, second) and (done, total) == (2, 5)
        page.keyboard.press("s")
        page.wait_for_selector("#skip")
        fourth, done, total = state()
        assert fourth not in (first, second, third) and (done, total) == (2, 4)  # a skipped item is not counted

        # vote, reload: same item, same vote, same bar; a vote survives a reload until moving on
        page.keyboard.press("1")
        page.wait_for_selector("#vote-left.chosen")
        page.reload()
        assert state() == (fourth, 3, 4)
        assert page.locator("#vote-left.chosen").count() == 1
        page.click("#next")
        page.wait_for_selector("#skip")
        fifth, done, total = state()
        assert fifth not in (first, second, third, fourth) and (done, total) == (3, 4)
        page.click("#vote-right")
        page.wait_for_selector("#next")
        page.click("#next")
        page.wait_for_selector("text=Nothing left to vote on")
        assert int(page.locator("#progress").get_attribute("value")) == 4

        assert page.evaluate("window.__xss") is None
        assert dialogs == []

        annotations = {(row["instruction"], row["preference"], row["comment"]) for row in store.annotations(connection)}
        instructions = dict(connection.execute("SELECT id, instruction FROM items").fetchall())

        def expected(item: str, side: str) -> float:
            return 1.5 if side == "tie" else 1.0 if (side == "left") == a_on_left(item) else 2.0

        assert annotations == {
            (instructions[first], expected(first, "right"), "1 2 3 t s n: typed, not votes2"),
            (instructions[second], 1.5, ""),
            (instructions[fourth], expected(fourth, "left"), ""),
            (instructions[fifth], expected(fifth, "right"), ""),
        }

        # the admin page, for a screenshot: tally and plot
        admin = browser.new_page(viewport={"width": 1100, "height": 1000})
        admin.goto(server.admin_link)
        admin.wait_for_url(f"{server.url}/admin")
        assert admin.locator("img.plot").evaluate("img => img.complete && img.naturalWidth > 0")
        admin.screenshot(path=str(ARTIFACTS / "annotate_admin.png"), full_page=True)
        connection.close()



def test_controls_look_like_any_item_in_the_browser_and_the_admin_sees_their_accuracy(browser, tmp_path):
    a, b = write_outputs(tmp_path / "outputs", 3)
    db = tmp_path / "votes.sqlite"
    with AnnotateServer(a, b, db, controls=2) as server:
        connection = store.connect(db)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/a/{store.add_annotator(connection, 'cara')}")
        page.wait_for_url(f"{server.url}/vote")
        seen_controls, layouts = 0, set()
        for done in range(5):  # 3 real items and 2 controls, in an order only the store knows
            item = page.locator("input[name=item]").first.get_attribute("value")
            assert page.inner_text("#progress-text") == f"{done} of 5 done"
            layouts.add(tuple(page.eval_on_selector_all("main *", "els => els.map(e => e.tagName + '#' + e.id)")))
            a_on_left, control, correct = connection.execute(
                "SELECT s.a_on_left, i.control, i.control_correct FROM assignments s JOIN items i "
                "ON i.id = s.item_id WHERE s.item_id = ?", (item,)).fetchone()
            seen_controls += control is not None
            wanted = correct if control else "B"  # the real answer on controls; B on real items
            page.keyboard.press("1" if (wanted == "A") == bool(a_on_left) else "2")
            page.wait_for_selector("#next")
            page.keyboard.press("n")
            page.wait_for_selector("#skip, h1")  # the next item, or the page that says all is done
        assert seen_controls == 2 and page.locator("text=Nothing left to vote on").count() == 1
        assert len(layouts) == 1  # a control page is made of the same elements as any other

        admin = browser.new_page(viewport={"width": 1100, "height": 1000})
        admin.goto(server.admin_link)
        admin.wait_for_url(f"{server.url}/admin")
        assert "wins 3 · ties 0 · losses 0" in admin.inner_text("main")  # control votes are not in the tally
        assert admin.inner_text("#annotators tbody tr .control-accuracy") == "100.0% of 2"
        assert "No item has two votes yet" in admin.inner_text("main")
        admin.screenshot(path=str(ARTIFACTS / "annotate_admin_controls.png"), full_page=True)
        connection.close()
