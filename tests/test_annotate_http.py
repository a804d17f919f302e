"""`apprentice annotate` over real HTTP: the CLI in a subprocess, annotators posting plain forms. Covers access
control, CSRF, size limits, cross-annotator isolation, blindness of every response, the admin page, invite and
export. Run: python -m pytest tests/test_annotate_http.py -q"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import httpx
import pytest

from annotate_support import GENERATOR_A, GENERATOR_B, AnnotateServer, Annotator, invite, write_outputs
from apprentice.annotate import store


@pytest.fixture
def files(tmp_path):
    a, b = write_outputs(tmp_path / "outputs", 12)
    return a, b, tmp_path / "votes.sqlite"


@pytest.fixture
def server(files):
    a, b, db = files
    with AnnotateServer(a, b, db, votes_per_item=2) as running:
        yield running


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests that only add annotators of their own (server starts cost seconds)."""
    tmp = tmp_path_factory.mktemp("shared")
    a, b = write_outputs(tmp / "outputs", 40)
    with AnnotateServer(a, b, tmp / "votes.sqlite", votes_per_item=3) as running:
        yield running


_names = iter(range(10**6))


def person(server, name: str = "p") -> Annotator:
    """A fresh annotator (unique name) who has opened their invite link."""
    unique = f"{name}{next(_names)}"
    db = store.connect(server.db)
    try:
        token = store.add_annotator(db, unique)
    finally:
        db.close()
    return Annotator(server.url, f"{server.url}/a/{token}", name=unique)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apprentice", "annotate", *args], capture_output=True, text=True)


def stored_votes(db, *names: str) -> list[tuple[str, str, str]]:
    connection = store.connect(db)
    try:
        return [tuple(r) for r in connection.execute(
            "SELECT a.name, v.choice, v.comment FROM votes v JOIN annotators a ON a.id = v.annotator_id "
            f"WHERE a.name IN ({','.join('?' * len(names))})", names)]
    finally:
        connection.close()


def test_restart_imports_nothing_and_other_files_are_refused(files, tmp_path):
    a, b, db = files
    with AnnotateServer(a, b, db) as first:
        assert "12 new items" in first.output
        assert first.admin_link and "/a/" in first.admin_link
        first.restart()
        assert "resuming with 12 items" in first.output
        assert first.output.count("admin page: http") == 1  # the token is not reprinted (only its hash is kept)
    other_a, other_b = write_outputs(tmp_path / "other", 5)
    done = cli("--a", str(other_a), "--b", str(other_b), "--db", str(db), "--port", "1")
    assert done.returncode == 2
    assert "already holds 12 items from other output files" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_serve_without_files_is_one_clear_error():
    done = cli("--db", "x.sqlite")
    assert done.returncode == 2
    assert "annotate needs --a FILE --b FILE --db FILE" in done.stderr


@pytest.mark.parametrize(("method", "path", "cookies", "status", "body"), [
    ("GET", "/", {}, 401, "Unauthorized"),
    ("GET", "/vote", {}, 401, "Unauthorized"),
    ("POST", "/vote", {}, 401, "Unauthorized"),
    ("POST", "/next", {}, 401, "Unauthorized"),
    ("GET", "/admin", {}, 401, "Unauthorized"),
    ("GET", "/admin/export", {}, 401, "Unauthorized"),
    ("POST", "/admin/invite", {}, 401, "Unauthorized"),
    ("GET", "/a/not-a-real-token", {}, 403, "Forbidden"),
    ("GET", "/vote", {"apprentice_annotator": "guessed-token"}, 403, "Forbidden"),
    ("POST", "/vote", {"apprentice_annotator": "guessed-token"}, 403, "Forbidden"),
    ("GET", "/admin", {"apprentice_admin": "guessed-token"}, 403, "Forbidden"),
    ("GET", "/admin/export", {"apprentice_admin": "guessed-token"}, 403, "Forbidden"),
])
def test_no_token_or_a_wrong_token_reveals_nothing(shared, method, path, cookies, status, body):
    response = httpx.request(method, shared.url + path, cookies=cookies, data={"choice": "left"})
    assert response.status_code == status
    assert response.text == body
    assert "set-cookie" not in response.headers


def test_an_annotator_token_does_not_open_the_admin_pages(shared):
    token = person(shared).client.cookies["apprentice_annotator"]
    for path in ("/admin", "/admin/export"):
        response = httpx.get(shared.url + path, cookies={"apprentice_admin": token})
        assert response.status_code == 403


def test_invite_cli_link_sets_a_strict_httponly_cookie_and_leaves_the_token_behind(shared):
    link = invite(shared.db, "invited-by-cli", "http://example.org:9000/")
    assert re.fullmatch(r"http://example\.org:9000/a/[A-Za-z0-9_-]{32}", link)
    link = link.replace("http://example.org:9000", shared.url)
    response = httpx.get(link)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert 'http-equiv="refresh" content="0; url=/vote"' in response.text
    assert link.rsplit("/", 1)[1] not in response.text
    assert "script-src 'nonce-" in response.headers["content-security-policy"]


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "é" * 64, "someone-elses"])
def test_posts_without_the_right_form_token_are_refused(shared, csrf):
    ana, bob = person(shared), person(shared)
    item, own_csrf, _ = ana.page()
    _, bobs_csrf, _ = bob.page()
    data = {"item": item, "choice": "left"}
    if csrf is not None:
        data["csrf"] = bobs_csrf if csrf == "someone-elses" else csrf
    assert ana.post("/vote", data).status_code == 403
    assert ana.post("/next", {k: v for k, v in data.items() if k != "choice"}).status_code == 403
    assert stored_votes(shared.db, ana.name) == []
    assert ana.page()[0] == item  # not skipped either
    assert ana.vote(item, own_csrf, "left").status_code == 303


def test_one_annotator_cannot_read_or_change_anothers_vote(shared):
    ana, bob = person(shared), person(shared)
    item, csrf, _ = ana.page()
    assert ana.vote(item, csrf, "left", "ana-private-note").status_code == 303
    _, bobs_csrf, _ = bob.page()
    rejected = bob.vote(item, bobs_csrf, "right", "bob was here")
    assert rejected.status_code == 409
    bob.next(item, bobs_csrf)  # cannot finalise or skip ana's item either
    assert all("ana-private-note" not in r.text for r in bob.responses)
    assert stored_votes(shared.db, bob.name) == []
    [(_, _, comment)] = stored_votes(shared.db, ana.name)
    assert comment == "ana-private-note"
    item_again, _, page = ana.page()
    assert item_again == item and "ana-private-note" in page.text
    assert 'id="vote-left" name="choice" value="left" class="chosen"' in page.text  # still her vote, unchanged


def test_body_and_comment_limits(shared):
    ana = person(shared)
    item, csrf, _ = ana.page()
    huge = {"csrf": csrf, "item": item, "choice": "left", "comment": "x" * 100_000}
    assert ana.post("/vote", huge).status_code == 413

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        yield f"csrf={csrf}&item={item}&choice=left&comment=".encode()
        for _ in range(20):
            yield b"y" * 8192

    streamed = ana.client.post("/vote", content=chunks(),
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    too_long = ana.vote(item, csrf, "left", "z" * 2001)
    assert too_long.status_code == 400 and "2000" in too_long.text
    assert ana.vote(item, csrf, "sideways").status_code == 400
    assert stored_votes(shared.db, ana.name) == []
    assert ana.vote(item, csrf, "left", "z" * 2000).status_code == 303


def test_sql_looking_and_html_comments_are_stored_and_shown_as_text(shared, tmp_path):
    ana = person(shared, "Robert'); DROP TABLE annotators; --")
    item, csrf, _ = ana.page()
    comment = "x'); DROP TABLE votes; -- <b>bold</b>"
    assert ana.vote(item, csrf, "tie", comment).status_code == 303
    _, _, page = ana.page()
    assert "x&#39;); DROP TABLE votes; -- &lt;b&gt;bold&lt;/b&gt;" in page.text
    out = tmp_path / "exported" / "annotations.json"
    done = cli("export", "--db", str(shared.db), "--out", str(out))
    assert done.returncode == 0, done.stderr
    [annotation] = [a for a in json.loads(out.read_text()) if a["annotator"] == ana.name]
    assert annotation["comment"] == comment and annotation["preference"] == 1.5
    assert annotation["generator_1"] == GENERATOR_A and annotation["generator_2"] == GENERATOR_B
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


def test_export_of_a_missing_database_is_one_clear_error(tmp_path):
    done = cli("export", "--db", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "out.json"))
    assert done.returncode == 2
    assert "nope.sqlite: no such votes database" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_a_full_session_never_reveals_models_files_or_order(server, files):
    """Two annotators vote on everything; no response they receive names a model or a file, and neither gets the
    items in file order."""
    a, b, db = files
    forbidden = [GENERATOR_A, GENERATOR_B, a.name, b.name, a.stem, b.stem, "zebra", "quokka", "alpha", "beta"]
    people = [person(server), person(server)]
    orders = []
    for someone in people:
        order = []
        while True:
            item, csrf, page = someone.page()
            if item is None:
                assert "Nothing left to vote on" in page.text
                break
            order.append(int(re.search(r"Instruction number (\d+)", page.text).group(1)))
            assert someone.vote(item, csrf, "left").status_code == 303
            someone.page()  # the page with the vote marked, as a browser would show it
            assert someone.next(item, csrf).status_code == 303
        orders.append(order)
        someone.get("/static/style.css")
    assert [sorted(o) for o in orders] == [list(range(12))] * 2
    assert all(o != list(range(12)) for o in orders)
    responses = [r for p in people for r in p.responses]
    assert len(responses) > 100
    for response in responses:
        text = response.text + json.dumps(dict(response.headers))
        for word in forbidden:
            assert word.lower() not in text.lower(), f"{word!r} in {response.request.url}"
    # both sides were used for output A
    connection = store.connect(db)
    assert Counter(r[0] for r in connection.execute("SELECT a_on_left FROM assignments")).keys() == {0, 1}
    connection.close()


def test_admin_sees_progress_and_tally_invites_and_exports(server, files):
    admin = Annotator(server.url, server.admin_link)
    page = admin.get("/admin")
    assert page.status_code == 200 and "No votes yet" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert admin.post("/admin/invite", {"name": "carol"}).status_code == 403
    invited = admin.post("/admin/invite", {"csrf": csrf, "name": "carol"})
    link = re.search(r'<code id="invite-link">([^<]+)</code>', invited.text).group(1)
    assert link.startswith(server.url + "/a/")
    duplicate = admin.post("/admin/invite", {"csrf": csrf, "name": "carol"})
    assert "&#39;carol&#39; already exists" in duplicate.text

    carol = Annotator(server.url, link)
    for winner in ("A", "B", "tie"):  # the test knows A's texts ("First answer"), the page does not say
        item, vote_csrf, page = carol.page()
        a_on_left = page.text.index("First answer") < page.text.index("Second answer")
        choice = "tie" if winner == "tie" else "left" if (winner == "A") == a_on_left else "right"
        assert carol.vote(item, vote_csrf, choice).status_code == 303
        assert carol.next(item, vote_csrf).status_code == 303
    page = admin.get("/admin").text
    assert "carol" in page and "3 votes of 24 wanted" in page
    assert GENERATOR_A in page and GENERATOR_B in page  # names appear only to the admin, with the tally
    assert re.search(r'<img class="plot" alt="tally bar chart" src="data:image/png;base64,iVBOR', page)
    assert "wins 1 · ties 1 · losses 1" in page and 'id="win-rate">50.0%' in page
    export = admin.get("/admin/export")
    assert export.headers["content-disposition"].startswith("attachment")
    annotations = export.json()
    assert sorted(a["preference"] for a in annotations) == [1.0, 1.5, 2.0]
    assert {a["annotator"] for a in annotations} == {"carol"}
