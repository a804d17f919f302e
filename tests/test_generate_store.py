"""A run's append-only logs: what a kill leaves is cut off on resume, an edited line is one clear error."""

import pytest

from apprentice.errors import UserError
from apprentice.generate import store


def test_torn_last_line_is_cut_and_line_separators_inside_strings_are_kept(tmp_path):
    path = tmp_path / "data.jsonl"
    log = store.AppendLog(path)
    log.append({"instruction": "Join the lines", "output": "one\u2028two\u2029three"})  # JSON may hold these raw
    log.append({"instruction": "Second"})
    log.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"instruction": "half wri')  # a kill in the middle of a write
    records = store.read_log(path)
    assert [r["instruction"] for r in records] == ["Join the lines", "Second"]
    assert records[0]["output"] == "one\u2028two\u2029three"
    assert path.read_bytes() == whole  # the torn line is gone, so the next append starts a clean line


@pytest.mark.parametrize("line,expected", [
    (b"{not json}\n", "data.jsonl:2: invalid JSON"),
    (b"[1, 2]\n", "data.jsonl:2: expected a JSON object, got a list"),
    (b"\xff\xfe\n", "data.jsonl:2: not UTF-8"),
])
def test_an_edited_line_is_one_error_naming_it(tmp_path, line, expected):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"instruction": "fine"}\n' + line)
    with pytest.raises(UserError, match="fix or remove the line to resume") as error:
        store.read_log(path)
    assert expected in str(error.value)


def test_a_missing_log_is_empty(tmp_path):
    assert store.read_log(tmp_path / "rejected.jsonl") == []
