"""reasoning.files: torn JSONL read back, atomic writes, the same-config check. Expected values
are written by hand from the bytes the tests write."""

from __future__ import annotations

import logging

import pytest

from reasoning.errors import UserError
from reasoning.files import atomic_open, config_diff, read_jsonl, refuse_other_config, write_atomic

# -- torn JSONL ------------------------------------------------------------------------------------


def test_a_torn_last_line_is_dropped_and_reported(tmp_path, caplog):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')  # 9 + 9 whole bytes, then 6 torn ones
    with caplog.at_level(logging.WARNING, logger="reasoning.files"):
        got = read_jsonl(p)
    assert got.records == [{"a": 1}, {"a": 2}]
    assert (got.whole_bytes, got.torn) == (18, True)
    assert "torn last line" in caplog.text and "(6 bytes)" in caplog.text
    assert p.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": '  # reading changes nothing


def test_a_whole_last_line_without_its_newline_is_torn_too(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}')  # parses, but the writer never finished the line
    got = read_jsonl(p)
    assert (got.records, got.whole_bytes, got.torn) == ([{"a": 1}], 9, True)


def test_a_line_cut_inside_a_utf8_character_is_torn_not_a_crash(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"q": "caf\xc3')  # the write stopped inside the two bytes of \xe9
    got = read_jsonl(p)
    assert (got.records, got.whole_bytes, got.torn) == ([{"a": 1}], 9, True)


def test_a_whole_file_reads_entirely(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n[2, 3]\n')
    got = read_jsonl(p)
    assert (got.records, got.whole_bytes, got.torn) == ([{"a": 1}, [2, 3]], 16, False)


def test_a_bad_line_followed_by_blank_lines_is_a_torn_tail(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": \n\n')
    got = read_jsonl(p)
    assert (got.records, got.whole_bytes, got.torn) == ([{"a": 1}], 9, True)


def test_a_bad_line_before_the_end_is_an_error_naming_it(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl: line 2 is not a number line \("):
        read_jsonl(p, what="a number line")


def test_parse_builds_the_records_and_its_errors_mark_a_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"n": 2}\n{"m": 3}\n{"n": 4}\n')
    with pytest.raises(ValueError, match="line 2 is not a row"):
        read_jsonl(p, lambda obj: obj["n"] * 10, "a row")  # a KeyError on line 2
    p.write_bytes(b'{"n": 2}\n{"n": 4}\n{"m": 3}\n')
    assert read_jsonl(p, lambda obj: obj["n"] * 10).records == [20, 40]  # the bad last line is torn


def test_a_missing_file_holds_nothing(tmp_path):
    got = read_jsonl(tmp_path / "none.jsonl")
    assert (got.records, got.whole_bytes, got.torn) == ([], 0, False)


# -- atomic writes ---------------------------------------------------------------------------------


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text("old\n")
    (tmp_path / "summary.json.tmp").write_text("left by a crash, longer than the new text\n")
    assert write_atomic(p, "new\n") == p
    assert p.read_text() == "new\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["summary.json"]


def test_a_writer_that_raises_leaves_the_old_file_and_no_partial_one(tmp_path):
    p = tmp_path / "steps.jsonl"
    p.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(p) as f:
            f.write("half of the ne")
            raise RuntimeError("disk on fire")
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["steps.jsonl"]


def test_a_writer_that_raises_creates_nothing_where_there_was_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "m.gguf", "wb", suffix=".part") as f:
            f.write(b"GGUF")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_open_writes_bytes_through_its_suffix(tmp_path):
    p = tmp_path / "m.gguf"
    with atomic_open(p, "wb", suffix=".part") as f:
        f.write(b"GG")
        assert (tmp_path / "m.gguf.part").is_file() and not p.exists()  # nothing to read yet
        f.write(b"UF")
    assert p.read_bytes() == b"GGUF" and sorted(x.name for x in tmp_path.iterdir()) == ["m.gguf"]


def test_text_is_utf8(tmp_path):
    p = write_atomic(tmp_path / "c.yaml", "name: café\n")
    assert p.read_bytes() == b"name: caf\xc3\xa9\n"


# -- the same config -------------------------------------------------------------------------------


def test_config_diff_names_the_dotted_keys_that_differ_or_exist_on_one_side():
    assert config_diff("a: 1\nb: {c: 2, d: 3}\n", {"a": 1, "b": {"c": 2, "d": 4}, "e": 5}) == ["b.d", "e"]
    assert config_diff({"a": 1}, "a: 1\n") == []


def test_the_check_names_the_differing_keys(tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text("seed: 0\npolicy: {threshold: 0.5}\nmodel: a\n")
    with pytest.raises(UserError) as e:
        refuse_other_config(saved, {"seed": 0, "policy": {"threshold": 0.7}, "model": "b"},
                            "folder f holds rows", "pick another folder")
    assert str(e.value) == ("folder f holds rows of a different config (differs in model, "
                            "policy.threshold); pick another folder")


def test_the_check_shows_five_keys_and_counts_the_rest(tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text("".join(f"k{i}: 0\n" for i in range(7)))
    with pytest.raises(UserError, match=r"differs in k0, k1, k2, k3, k4 and 2 more\); fix it$"):
        refuse_other_config(saved, "".join(f"k{i}: 1\n" for i in range(7)), "f", "fix it")


def test_the_check_raises_the_class_asked_and_passes_the_same_config_or_none_saved(tmp_path):
    class FolderError(UserError):
        pass

    saved = tmp_path / "config.yaml"
    refuse_other_config(saved, "a: 1\n", "f", "fix")  # nothing saved: nothing to refuse
    saved.write_text("a: 1\n")
    refuse_other_config(saved, {"a": 1}, "f", "fix")  # the same config
    with pytest.raises(FolderError, match=r"differs in a\)"):
        refuse_other_config(saved, {"a": 2}, "f", "fix", FolderError)
