"""`mvc init`, `mvc fsck`, the group options and the exit status contract."""

from __future__ import annotations

import mvcstore


def test_init_creates_mvc_folder_in_cwd_and_prints_its_path(mvc, tmp_path):
    result = mvc("init")

    assert (tmp_path / ".mvc" / "config.json").is_file()
    assert str(tmp_path / ".mvc") in result.out
    assert mvc("log", "--all", "--json").json() == []
    fsck = mvc("fsck")
    assert fsck.out.strip().endswith(": ok")


def test_init_twice_fails_and_keeps_the_repository(mvc, tmp_path):
    mvc("init")
    config = (tmp_path / ".mvc" / "config.json").read_bytes()

    result = mvc.fails("init")

    assert "already exists" in result.err
    assert (tmp_path / ".mvc" / "config.json").read_bytes() == config


def test_init_path_and_mvc_dir_reach_the_same_repository(mvc, tmp_path, kit):
    mvc("init", "models")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kit.write_weights(elsewhere / "w.safetensors", 1)
    remote = kit.Mvc(elsewhere, mvc_dir=tmp_path / "models" / ".mvc")

    epoch = remote("commit", "--session", "a", "--weights", "w.safetensors").out.strip()

    assert (tmp_path / "models" / ".mvc").is_dir()
    assert not (elsewhere / ".mvc").exists()
    nested = tmp_path / "models" / "deep" / "er"
    nested.mkdir(parents=True)
    assert kit.Mvc(nested)("log", "--json").json()[0]["id"] == epoch


def test_init_without_path_uses_mvc_dir_when_set(tmp_path, kit):
    target = tmp_path / "store" / ".mvc"

    kit.Mvc(tmp_path, mvc_dir=target)("init")

    assert (target / "config.json").is_file()


def test_command_outside_a_repository_fails_with_init_hint(mvc):
    result = mvc.fails("log")

    assert "no mvcstore repository" in result.err
    assert "mvc init" in result.err


def test_version_help_and_usage_errors_use_exit_codes_0_and_2(mvc):
    assert mvc("--version").out.strip() == f"mvc {mvcstore.__version__}"
    assert "Commands:" in mvc("--help").out

    unknown_option = mvc("log", "--no-such-option", expect=2)
    missing_argument = mvc("show", expect=2)
    unknown_command = mvc("no-such-command", expect=2)

    for result in (unknown_option, missing_argument, unknown_command):
        assert "Usage:" in result.err
        assert result.out == ""


def test_verbose_flags_log_info_and_debug_on_stderr_only(mvc, tmp_path, kit):
    quiet = mvc("init", "quiet")
    info = mvc("-v", "init", "loud")
    kit.write_weights(tmp_path / "loud" / "w.safetensors", 1)
    debug = kit.Mvc(tmp_path / "loud")(
        "-vv", "commit", "--session", "a", "--weights", "w.safetensors"
    )

    assert quiet.err == ""
    assert "INFO mvcstore.repo: created repository" in info.err
    assert "DEBUG" in debug.err
    assert len(debug.out.strip()) == 64


def test_fsck_on_a_clean_history_exits_0_and_reports_ok(history):
    text = history.mvc("fsck")
    report = history.mvc("fsck", "--json").json()

    assert text.out.strip().endswith(": ok")
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["epochs"] == 5
