"""Kernel builds: a lock left by a killed compile is cleared, not waited on forever."""

import fcntl

import pytest
import torch.utils.cpp_extension as cpp_extension

from ho_co import native


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """build_kernel with torch's compile replaced by a recorder (no compiler run)."""
    calls = []

    def load(name, sources, build_directory, **kwargs):
        calls.append({"name": name, "lock_left": (tmp_path / name / "lock").exists(),
                      "build_directory": build_directory})

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path / name))
    return calls


def test_a_lock_left_by_a_killed_compile_is_removed_with_a_warning(tmp_path, fake_build):
    name = f"ho_co_fake_{native.cpu_tag()}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "lock").write_text("")  # what torch leaves when its compile is killed
    with pytest.warns(RuntimeWarning, match=r"removed a build lock left by an interrupted compile"):
        ops = native.build_kernel("fake.cpp", "ho_co_fake", "HO_CO_FAKE_SWITCH", "the fake kernel", "eager")
    assert ops is not None
    assert fake_build == [{"name": name, "lock_left": False, "build_directory": str(tmp_path / name)}]


def test_a_clean_build_warns_nothing_and_the_switch_still_skips_it(tmp_path, fake_build, monkeypatch, recwarn):
    assert native.build_kernel("fake.cpp", "ho_co_fake", "HO_CO_FAKE_SWITCH", "the fake kernel", "eager") is not None
    assert len(fake_build) == 1 and not [w for w in recwarn if w.category is RuntimeWarning]
    monkeypatch.setenv("HO_CO_FAKE_SWITCH", "0")
    assert native.build_kernel("fake.cpp", "ho_co_fake", "HO_CO_FAKE_SWITCH", "the fake kernel", "eager") is None
    assert len(fake_build) == 1


def test_the_build_lock_excludes_a_second_builder(tmp_path):
    with native.build_lock(tmp_path / "k"):
        with open(tmp_path / "k" / "ho_co.flock", "w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "k" / "ho_co.flock", "w") as other:  # released on the way out
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
