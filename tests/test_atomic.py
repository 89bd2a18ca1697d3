import os

import pytest

from orchestrator.atomic import atomic_directory, atomic_write_text


def test_directory_appears_whole_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("second")
        assert (target / "a.txt").read_text() == "first"  # the old one stays until the end
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_leaves_the_old_directory_and_no_debris(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("kept")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_results_are_readable_by_others_under_the_usual_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "adapter") as tmp:
            (tmp / "x").write_text("x")
        atomic_write_text(tmp_path / "report.md", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.md").read_text() == "hello"
