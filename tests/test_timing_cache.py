"""The persistent timing cache: round trips, bad files never crash or get overwritten, merged saves.

Real files in tmp_path; tests run as root, so unwritable paths are a directory, a path under a regular file
or a path under /proc (chmod does not stop root).
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SRC
from tfaccel.compiler.timing_cache import (
    CACHE_FILE_NAME,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_SAMPLES,
    TimingCache,
    TimingKey,
)

MODULE_FILE = Path(SRC, "tfaccel", "compiler", "timing_cache.py")


def key(fingerprint: str = "ab12", variant: str = "openvino", precision: str = "fp32") -> TimingKey:
    return TimingKey(
        fingerprint, variant, precision, "Intel(R) Xeon(R) CPU @ 2.20GHz x2", "tensorflow 2.21.0"
    )


def opened(setting: str | None, default_dir: Path) -> TimingCache:
    cache, warnings = TimingCache.open(setting, default_dir)
    assert warnings == []
    return cache


def only_warning(warnings: list[str], path: Path, *words: str) -> str:
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0]
    for word in words:
        assert word in warnings[0], warnings[0]
    return warnings[0]


def good_file(path: Path, *keys: TimingKey) -> None:
    cache = opened(str(path), path.parent)
    for i, k in enumerate(keys):
        cache.put(k, [1.0 + i, 2.0 + i])
    assert cache.save() == []


# --- round trips ---------------------------------------------------------------------------------------


def test_round_trip_across_instances_in_the_default_folder(tmp_path):
    folder = tmp_path / "home" / ".cache" / "tfaccel"  # missing: created on save
    first = opened(None, folder)
    assert first.enabled and first.path == folder / CACHE_FILE_NAME
    assert first.get(key()) is None
    first.put(key(), [1.23456789, 2.5, 3])
    first.put(key(variant="tf"), [4.0])
    assert first.get(key()) == (1.2346, 2.5, 3.0)  # as stored: rounded to 4 decimals
    assert not folder.exists()  # nothing is written before save
    assert first.save() == []
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700

    second = opened(None, folder)
    assert second.get(key()) == (1.2346, 2.5, 3.0)
    assert second.get(key(variant="tf")) == (4.0,)
    assert second.get(key(precision="bf16")) is None
    assert second.get(key(fingerprint="ab13")) is None
    data = json.loads((folder / CACHE_FILE_NAME).read_text())
    assert data["format"] == "tfaccel-timing-cache" and data["version"] == 1
    entry = data["entries"][key().text()]
    assert entry["samples"] == [1.2346, 2.5, 3.0]
    assert entry["fields"] == {
        "fingerprint": "ab12",
        "variant": "openvino",
        "precision": "fp32",
        "machine": "Intel(R) Xeon(R) CPU @ 2.20GHz x2",
        "versions": "tensorflow 2.21.0",
    }


def test_an_explicit_path_relative_and_with_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = opened("ship/cache.json", tmp_path / "unused")
    assert cache.path == tmp_path / "ship" / "cache.json"
    cache.put(key(), [5.0])
    assert cache.save() == []
    assert opened(str(tmp_path / "ship" / "cache.json"), tmp_path).get(key()) == (5.0,)
    assert not (tmp_path / "unused").exists()


def test_put_keeps_the_last_64_samples_and_replaces_the_entry(tmp_path):
    cache = opened(None, tmp_path)
    cache.put(key(), [9.0])
    cache.put(key(), [float(i) for i in range(1, 101)])
    assert cache.get(key()) == tuple(float(i) for i in range(101 - MAX_SAMPLES, 101))
    cache.put(key(), [1e-9, 7.00004])  # below the stored resolution: kept positive
    assert cache.get(key()) == (0.0001, 7.0)
    cache.save()
    assert opened(None, tmp_path).get(key()) == (0.0001, 7.0)


@pytest.mark.parametrize(
    "samples", [[], [1.0, math.nan], [math.inf], [0.0], [-1.0], [True], ["1.0"], [1.0, None]]
)
def test_put_refuses_bad_samples(tmp_path, samples):
    for cache in (opened(None, tmp_path), opened("off", tmp_path)):
        with pytest.raises(ValueError, match="sample"):
            cache.put(key(), samples)
        assert cache.get(key()) is None


def test_a_bad_sample_before_the_last_64_is_refused_too(tmp_path):
    with pytest.raises(ValueError, match=r"samples\[0\]"):
        opened(None, tmp_path).put(key(), [math.nan] + [1.0] * MAX_SAMPLES)


@pytest.mark.parametrize(
    "fields",
    [
        ("", "tf", "fp32", "m", "v"),
        ("xyz", "tf", "fp32", "m", "v"),  # not hex
        ("a" * 129, "tf", "fp32", "m", "v"),
        ("ab", "", "fp32", "m", "v"),
        ("ab", "tf", "fp32", "m" * 1025, "v"),
        ("ab", "tf", 32, "m", "v"),
    ],
)
def test_a_bad_key_is_refused(fields):
    with pytest.raises(ValueError, match="TimingKey"):
        TimingKey(*fields)


def test_key_text_is_a_sha256_of_all_five_fields():
    base = key()
    texts = {
        base.text(),
        key(fingerprint="ab13").text(),
        key(variant="tf").text(),
        key(precision="bf16").text(),
        TimingKey("ab12", "openvino", "fp32", "AMD x2", "tensorflow 2.21.0").text(),
        TimingKey(
            "ab12", "openvino", "fp32", "Intel(R) Xeon(R) CPU @ 2.20GHz x2", "tensorflow 2.20.0"
        ).text(),
        # joined naively, these two would be the same string
        TimingKey("ab", "c", "d", "e", "f").text(),
        TimingKey("ab", "c", "d", "", "ef").text(),
    }
    assert len(texts) == 8
    assert all(len(t) == 64 and set(t) <= set("0123456789abcdef") for t in texts)
    assert base.text() == key().text()


# --- off -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["off", "OFF"])
def test_off_is_disabled_and_writes_nothing(tmp_path, monkeypatch, setting):
    monkeypatch.chdir(tmp_path)
    good_file(tmp_path / CACHE_FILE_NAME, key())  # an existing default cache is not read either
    before = sorted(os.listdir(tmp_path))
    cache = opened(setting, tmp_path)
    assert not cache.enabled and cache.path is None
    assert cache.get(key()) is None
    cache.put(key(), [1.0])
    assert cache.get(key()) is None
    assert cache.save() == []
    assert sorted(os.listdir(tmp_path)) == before


def test_an_empty_path_is_a_warning_and_no_cache(tmp_path):
    cache, warnings = TimingCache.open("  ", tmp_path)
    assert not cache.enabled and len(warnings) == 1 and "empty" in warnings[0]


# --- bad files: a warning, never a crash, never overwritten ---------------------------------------------


def test_the_path_is_a_directory(tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    cache, warnings = TimingCache.open(str(folder), tmp_path)
    only_warning(warnings, folder, "is a directory", "--timing-cache")
    assert cache.enabled and cache.get(key()) is None
    cache.put(key(), [1.0])
    only_warning(cache.save(), folder, "is a directory", "not overwritten", "not saved")
    assert folder.is_dir() and os.listdir(folder) == []
    assert sorted(os.listdir(tmp_path)) == ["adir"]  # no temporary file left behind


def test_the_parent_is_a_regular_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    path = blocker / "cache.json"
    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, "should be a folder is a file")
    cache.put(key(), [1.0])
    only_warning(cache.save(), path, "cannot create its folder", "not saved", "--timing-cache")
    assert blocker.read_text() == "keep me\n"


def test_the_default_folder_cannot_be_created():
    home = Path("/proc/tfaccel-no-such-home")  # as a read-only home: no folder can be made there
    cache, warnings = TimingCache.open(None, home / ".cache" / "tfaccel")
    assert warnings == [] and cache.get(key()) is None  # nothing there to read: not an error
    cache.put(key(), [1.0])
    only_warning(cache.save(), home, "cannot create its folder")
    assert cache.get(key()) == (1.0,)  # still usable for this trace


def test_a_path_under_proc_is_unwritable(tmp_path):
    path = Path("/proc/tfaccel-timing-cache-test.json")
    cache = opened(str(path), tmp_path)
    cache.put(key(), [1.0])
    only_warning(cache.save(), path, "cannot write it", "not saved")
    assert not path.exists()


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, "not a regular file")
    cache.put(key(), [1.0])
    only_warning(cache.save(), path, "not a regular file", "not overwritten")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x00\xff\xfe garbage \x89PNG", ("not UTF-8",)),
        (b"{not json", ("not JSON",)),
        (b"[" * 100000, ("not JSON",)),  # deeper than the parser's recursion limit
        (b'{"format": "tfaccel-timing-cache", "version": 1, "entries": [1, 2]', ("not JSON",)),
    ],
    ids=["binary", "broken JSON", "deep nesting", "truncated"],
)
def test_garbage_is_ignored_and_not_overwritten(tmp_path, content, words):
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, "is not a timing cache", *words, "delete the file")
    assert cache.get(key()) is None
    cache.put(key(), [1.0])
    only_warning(cache.save(), path, "not overwritten", "not saved")
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    "document, words",
    [
        ({"name": "my-project", "dependencies": {"x": "1.0"}}, ('no "format"',)),
        ([1, 2, 3], ("list",)),
        ("just a string", ("str",)),
        ({"format": "tfaccel-timing-cache", "version": "1", "entries": {}}, ('"version"',)),
        ({"format": "tfaccel-timing-cache", "version": 1, "entries": []}, ('"entries"',)),
        ({"format": "tfaccel-timing-cache", "version": 2, "entries": {}}, ("newer tfaccel",)),
    ],
)
def test_json_of_another_shape_is_ignored_and_not_overwritten(tmp_path, document, words):
    path = tmp_path / "package.json"
    content = json.dumps(document).encode()
    path.write_bytes(content)
    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, *words)
    cache.put(key(), [1.0])
    only_warning(cache.save(), path, "not overwritten", *words)
    assert path.read_bytes() == content


def test_a_checked_in_cache_with_a_merge_conflict_says_so(tmp_path):
    path = tmp_path / "cache.json"
    good_file(path, key("aa"))
    lines = path.read_text().splitlines(keepends=True)
    entry = next(i for i, line in enumerate(lines) if line.startswith("  "))
    theirs = lines[entry].replace("1.0, 2.0", "1.5, 2.5")
    conflicted = [*lines[:entry], "<<<<<<< HEAD\n", lines[entry], "=======\n", theirs, ">>>>>>> other\n"]
    content = "".join([*conflicted, *lines[entry + 1 :]])
    path.write_text(content)
    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, "merge conflict", "resolve the conflict")
    cache.put(key("bb"), [1.0])
    only_warning(cache.save(), path, "merge conflict", "not overwritten")
    assert path.read_text() == content


def test_an_empty_file_is_an_empty_cache(tmp_path):
    path = tmp_path / "cache.json"
    path.write_bytes(b"")  # e.g. made with touch before the first trace
    cache = opened(str(path), tmp_path)
    cache.put(key(), [1.0])
    assert cache.save() == []
    assert opened(str(path), tmp_path).get(key()) == (1.0,)


def test_a_file_over_16_mib_is_refused_unread(tmp_path):
    path = tmp_path / "cache.json"
    with open(path, "wb") as stream:
        stream.truncate(MAX_FILE_BYTES + 1)
    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, "too large")
    cache.put(key(), [1.0])
    only_warning(cache.save(), path, "too large", "not overwritten")
    assert path.stat().st_size == MAX_FILE_BYTES + 1


def _bad_entries() -> list[tuple[str, object]]:
    k = key(fingerprint="bad0")
    fields = {
        "fingerprint": "bad0",
        "variant": "openvino",
        "precision": "fp32",
        "machine": k.machine,
        "versions": k.versions,
    }
    ok = {"fields": fields, "samples": [1.0], "seq": 1}
    return [
        ("not an object", [1.0]),
        ("no samples", {"fields": fields}),
        ("empty samples", {**ok, "samples": []}),
        ("too many samples", {**ok, "samples": [1.0] * (MAX_SAMPLES + 1)}),
        ("a string sample", {**ok, "samples": ["1.0"]}),
        ("a boolean sample", {**ok, "samples": [True]}),
        ("a zero sample", {**ok, "samples": [0]}),
        ("a negative sample", {**ok, "samples": [1.0, -2.0]}),
        ("NaN", {**ok, "samples": [math.nan]}),
        ("Infinity", {**ok, "samples": [math.inf]}),
        ("a huge integer", {**ok, "samples": [10**400]}),
        ("a nested sample", {**ok, "samples": [[1.0]]}),
        ("no fields", {"samples": [1.0]}),
        ("a field missing", {**ok, "fields": {n: v for n, v in fields.items() if n != "machine"}}),
        ("a field not a string", {**ok, "fields": {**fields, "precision": 32}}),
        ("a fingerprint not hex", {**ok, "fields": {**fields, "fingerprint": "zz"}}),
        ("another entry's fields", {**ok, "fields": {**fields, "variant": "xla"}}),
        ("a negative seq", {**ok, "seq": -1}),
        ("a boolean seq", {**ok, "seq": True}),
    ]


@pytest.mark.parametrize("why, bad", _bad_entries(), ids=[why for why, _ in _bad_entries()])
def test_a_bad_entry_among_good_ones_is_dropped_and_counted(tmp_path, why, bad):
    path = tmp_path / "cache.json"
    good_file(path, key("aa"), key("bb"))
    data = json.loads(path.read_text())
    data["entries"][key(fingerprint="bad0").text()] = bad
    path.write_text(json.dumps(data))  # NaN and Infinity written as Python writes them

    cache, warnings = TimingCache.open(str(path), tmp_path)
    only_warning(warnings, path, "1 of 3 entries are not valid")
    assert cache.get(key("aa")) == (1.0, 2.0) and cache.get(key("bb")) == (2.0, 3.0)
    assert cache.get(key("bad0")) is None

    cache.put(key("cc"), [3.0])
    only_warning(cache.save(), path, "dropped 1 entries that were not valid")
    assert opened(str(path), tmp_path).get(key("aa")) == (1.0, 2.0)  # no warning left: the bad one is gone
    assert set(json.loads(path.read_text())["entries"]) == {key(f).text() for f in ("aa", "bb", "cc")}


def test_hand_edited_samples_are_read_rounded(tmp_path):
    path = tmp_path / "cache.json"
    good_file(path, key())
    data = json.loads(path.read_text())
    data["entries"][key().text()]["samples"] = [1.234567, 3]
    del data["entries"][key().text()]["seq"]  # optional
    path.write_text(json.dumps(data))
    assert opened(str(path), tmp_path).get(key()) == (1.2346, 3.0)


# --- saving: merged, deterministic, atomic -------------------------------------------------------------


def test_two_caches_on_one_file_keep_both_entries(tmp_path):
    path = tmp_path / "cache.json"
    good_file(path, key("00"))
    first = opened(str(path), tmp_path)
    second = opened(str(path), tmp_path)
    first.put(key("aa"), [1.0])
    second.put(key("bb"), [2.0])
    assert first.save() == []
    assert second.save() == []
    assert second.get(key("aa")) == (1.0,)  # saving read what the other had added
    merged = opened(str(path), tmp_path)
    assert [merged.get(key(f)) for f in ("00", "aa", "bb")] == [(1.0, 2.0), (1.0,), (2.0,)]
    assert sorted(os.listdir(tmp_path)) == ["cache.json"]  # no temporary files left


def test_the_same_content_is_the_same_bytes(tmp_path):
    keys = [key("aa"), key("bb", "tf"), key("cc", precision="bf16")]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    first = opened(str(one), tmp_path)
    for i, k in enumerate(keys):
        first.put(k, [1.5 + i, 2.25])
    second = opened(str(two), tmp_path)
    for i, k in reversed(list(enumerate(keys))):  # another order
        second.put(k, [1.5 + i, 2.25])
    assert first.save() == [] and second.save() == []
    content = one.read_bytes()
    assert content == two.read_bytes()
    assert content.endswith(b"}\n") and content.isascii()
    stamp = one.stat().st_mtime_ns

    again = opened(str(one), tmp_path)  # a second trace measuring the same: the file does not change
    for i, k in enumerate(keys):
        again.put(k, [1.5 + i, 2.25])
    assert again.save() == []
    assert one.read_bytes() == content and one.stat().st_mtime_ns == stamp


def test_a_new_measurement_is_the_most_recently_written(tmp_path):
    path = tmp_path / "cache.json"
    good_file(path, key("aa"), key("bb"))
    cache = opened(str(path), tmp_path)
    cache.put(key("aa"), [9.0])
    cache.save()
    seqs = {e["fields"]["fingerprint"]: e["seq"] for e in json.loads(path.read_text())["entries"].values()}
    assert seqs == {"aa": 2, "bb": 1}


def test_entries_beyond_the_cap_drop_the_least_recently_written(tmp_path):
    path = tmp_path / "cache.json"
    old = opened(str(path), tmp_path)
    for i in range(10):
        old.put(key(f"{i:04x}"), [1.0])
    assert old.save() == []
    new = opened(str(path), tmp_path)
    for i in range(MAX_ENTRIES - 5):
        new.put(key(f"f{i:06x}"), [2.0])
    warnings = new.save()
    only_warning(warnings, path, "dropped the 5 least recently written")
    loaded = opened(str(path), tmp_path)
    # all ten old ones were written together: the tie is broken by key, so the same five go everywhere
    kept_old = [i for i in range(10) if loaded.get(key(f"{i:04x}")) is not None]
    dropped = sorted(range(10), key=lambda i: key(f"{i:04x}").text())[:5]
    assert kept_old == sorted(set(range(10)) - set(dropped))
    assert loaded.get(key(f"f{0:06x}")) == loaded.get(key(f"f{MAX_ENTRIES - 6:06x}")) == (2.0,)
    fingerprints = [e["fields"]["fingerprint"] for e in json.loads(path.read_text())["entries"].values()]
    assert (
        len(fingerprints) == MAX_ENTRIES and sum(f.startswith("f") for f in fingerprints) == MAX_ENTRIES - 5
    )


def test_saving_through_a_symbolic_link_keeps_the_link(tmp_path):
    (tmp_path / "repo").mkdir()
    real = tmp_path / "repo" / "timing-cache.json"
    good_file(real, key("aa"))
    link = tmp_path / "link.json"
    link.symlink_to(real)
    cache = opened(str(link), tmp_path)
    cache.put(key("bb"), [1.0])
    assert cache.save() == []
    assert link.is_symlink()
    assert opened(str(real), tmp_path).get(key("bb")) == (1.0,)


def test_saves_from_concurrent_processes_lose_nothing(tmp_path):
    """Each process loads the module by path (no TensorFlow) and saves 15 times; every entry survives."""
    path = tmp_path / "cache.json"
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("timing_cache", {str(MODULE_FILE)!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules["timing_cache"] = module
        spec.loader.exec_module(module)
        for i in range(15):
            cache, warnings = module.TimingCache.open({str(path)!r}, "unused")
            assert warnings == [], warnings
            cache.put(module.TimingKey(f"{{sys.argv[1]}}{{i:02x}}", "tf", "fp32", "m", "v"), [1.0 + i])
            assert cache.save() == []
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, f"{p:02x}"]) for p in range(4)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0, 0]
    cache = opened(str(path), tmp_path)
    for p in range(4):
        for i in range(15):
            assert cache.get(TimingKey(f"{p:02x}{i:02x}", "tf", "fp32", "m", "v")) == (1.0 + i,)


# --- the module itself ---------------------------------------------------------------------------------


def test_the_module_is_standard_library_only():
    tree = ast.parse(MODULE_FILE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


# --- property ------------------------------------------------------------------------------------------

_field = st.text(max_size=40)
_samples = st.lists(
    st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, allow_nan=False), min_size=1, max_size=80
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fingerprint=st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=128),
    variant=st.text(min_size=1, max_size=20),
    precision=_field,
    machine=_field,
    versions=_field,
    samples=_samples,
)
def test_round_trip_of_any_key_and_positive_samples(
    fingerprint, variant, precision, machine, versions, samples
):
    k = TimingKey(fingerprint, variant, precision, machine, versions)
    expected = tuple(max(round(s, 4), 0.0001) for s in samples[-MAX_SAMPLES:])
    with tempfile.TemporaryDirectory() as folder:
        cache = opened(None, Path(folder))
        cache.put(k, samples)
        assert cache.get(k) == expected
        assert cache.save() == []
        again = opened(None, Path(folder))
        assert again.get(k) == expected
        assert all(s > 0 and math.isfinite(s) for s in expected)
        assert again.get(TimingKey(fingerprint, variant + "x", precision, machine, versions)) is None
