"""resshift_jax.paths: the one project-relative path rule."""

import pathlib

from resshift_jax.paths import PROJECT_ROOT, resolve_project_path


def test_project_root_is_the_repository():
    assert (PROJECT_ROOT / "resshift_jax" / "paths.py").is_file()


def test_absolute_and_existing_paths_are_kept(tmp_path, monkeypatch):
    assert resolve_project_path(tmp_path / "nowhere") == tmp_path / "nowhere"
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_project_path("here") == pathlib.Path("here")


def test_missing_relative_path_is_under_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_project_path("configs/x.yaml") == PROJECT_ROOT / "configs" / "x.yaml"
