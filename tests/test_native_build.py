"""The compiled kernels' build folder: one per CPU kind and checkout."""
import pytest

from sts3d.models import native


def test_each_checkout_builds_in_its_own_folder(tmp_path):
    """build.ninja names the sources by absolute path: two checkouts sharing one folder rebuilt it in turn."""
    first, second = tmp_path / "a" / "sts3d" / "csrc", tmp_path / "b" / "sts3d" / "csrc"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert native.build_name(first) != native.build_name(second)
    assert native.build_name(tmp_path / "link" / "sts3d" / "csrc") == native.build_name(first)  # resolved
    assert native.build_name(first).startswith(f"sts3d_native_{native._cpu_tag()}_")


def test_the_extension_is_built_under_this_checkouts_name():
    if not native.available():
        pytest.skip("no compiled kernels here (no compiler, or STS3D_NO_EXTENSION)")
    assert native.extension().__name__ == native.build_name()
