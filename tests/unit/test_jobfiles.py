"""Jobs files: found by path or glob relative to the file naming them, nothing of the site's in them, names unique
across files, `after` checked and ordering the jobs; every error names the file, the job and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from backfilld import config, jobfiles
from backfilld.errors import ConfigError

ROOT = Path(__file__).parents[2]


def job(name: str, *, after: tuple[str, ...] = (), extra: str = "") -> str:
    return (f'[[jobs]]\nname = "{name}"\ntable = "users"\n' + (f"after = {list(after)!r}\n".replace("'", '"')
                                                               if after else "")
            + extra + '[jobs.set]\nc = "lower(email)"\n')


def site(tmp_path: Path, jobs_files: list[str], inline: str = "") -> Path:
    p = tmp_path / "etc" / "backfilld.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"jobs_files = {jobs_files!r}\n".replace("'", '"') + '[database]\nurl = "sqlite:///app.db"\n'
                 + inline, encoding="utf-8")
    return p


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def err(path: Path, *jobs_files: Path | str) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(path, jobs_files)
    return str(e.value)


def test_a_jobs_file_with_its_header_is_read_relative_to_the_config_naming_it(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ext = write(tmp_path / "etc" / "ext" / "echo" / "backfills.toml",
                '[package]\nname = "Echo"\nversion = "1.2.0"\n\n' + job("echo_a") + job("echo_b"))
    cfg_path = site(tmp_path, ["ext/echo/backfills.toml"], inline=job("site_job"))
    monkeypatch.chdir(tmp_path / "etc" / "ext")   # the working directory plays no part
    cfg = config.load(cfg_path)
    assert [j.name for j in cfg.jobs] == ["site_job", "echo_a", "echo_b"]
    a = cfg.job("echo_a").origin
    assert (Path(a.file).resolve(), a.position, a.package, a.version, a.jobs_file) == (
        ext.resolve(), 0, "Echo", "1.2.0", True)
    assert a.shipped_by == "Echo 1.2.0" and cfg.job("echo_b").origin.position == 1
    own = cfg.job("site_job").origin
    assert (own.file, own.position, own.jobs_file) == (str(cfg_path), 0, False)


def test_a_glob_reads_its_matches_in_path_order_and_a_file_named_twice_once(tmp_path: Path) -> None:
    for ext in ("zeta", "alpha", "mid"):
        write(tmp_path / "etc" / "ext" / ext / "backfills.toml", job(f"{ext}_job"))
    cfg = config.load(site(tmp_path, ["ext/mid/backfills.toml", "ext/*/backfills.toml"]))
    assert [j.name for j in cfg.jobs] == ["mid_job", "alpha_job", "zeta_job"]
    assert cfg.unmatched_globs == ()


def test_a_glob_matching_nothing_is_a_warning_a_missing_literal_path_an_error(tmp_path: Path) -> None:
    cfg_path = site(tmp_path, ["ext/*/backfills.toml"], inline=job("own"))
    cfg = config.load(cfg_path)
    assert [j.name for j in cfg.jobs] == ["own"]
    assert cfg.unmatched_globs == (("ext/*/backfills.toml", f"{cfg_path}: jobs_files[0]"),)
    msg = err(site(tmp_path, ["ext/*/backfills.toml", "ext/echo/backfills.toml"]))
    assert msg == f"{cfg_path}: jobs_files[1]: {cfg_path.parent}/ext/echo/backfills.toml: no such jobs file"
    assert "no such jobs file" in err(site(tmp_path, []), tmp_path / "nowhere.toml")
    (tmp_path / "adir.toml").mkdir()
    assert "adir.toml: is not a file" in err(site(tmp_path, []), tmp_path / "adir.toml")


def test_jobs_files_given_on_the_command_line_are_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "work" / "mine.toml", job("mine"))
    cfg_path = site(tmp_path, [])
    monkeypatch.chdir(tmp_path / "work")
    assert [j.name for j in config.load(cfg_path, ["mine.toml"]).jobs] == ["mine"]
    assert "--jobs: other.toml: no such jobs file" in err(cfg_path, "other.toml")


@pytest.mark.parametrize("section,shown", [
    ('[database]\nurl = "sqlite:///x.db"\n', "[database]"),
    ("[throttle]\nmax_lag_s = 2\n", "[throttle]"),
    ('[[replicas]]\nurl = "postgresql://r@h/d"\n', "[[replicas]]"),
    ('jobs_files = ["more/*.toml"]\n', "jobs_files"),
    ("[nonsense]\n", "[nonsense]"),
])
def test_a_jobs_file_holding_anything_but_jobs_and_its_header_is_refused(tmp_path: Path, section: str,
                                                                         shown: str) -> None:
    ext = write(tmp_path / "ext.toml", section + job("j"))
    msg = err(site(tmp_path, []), ext)
    assert msg.startswith(f"{ext}: invalid jobs file\n  {shown}: does not belong in a jobs file"), msg
    assert "stay in its config" in msg


def test_every_error_in_a_jobs_file_names_the_file_the_job_and_the_key(tmp_path: Path) -> None:
    ext = write(tmp_path / "ext.toml", job("fine") + job("small", extra="batch_size = 0\n")
                + job("typo", extra="bacth_size = 5\n") + '[[jobs]]\ntable = "users"\n[jobs.set]\nc = "1"\n')
    msg = err(site(tmp_path, []), ext)
    assert msg.splitlines() == [
        f"{ext}: invalid jobs file",
        "  jobs[1].batch_size (job 'small'): Input should be greater than or equal to 1",
        "  jobs[2].bacth_size (job 'typo'): unknown key (check its spelling against config/example-jobs.toml)",
        "  jobs[3].name: is required"]


def test_errors_of_several_jobs_files_come_together(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", job("a", extra="batch_size = 0\n"))
    b = write(tmp_path / "b.toml", "[state]\n" + job("b"))
    msg = err(site(tmp_path, []), a, b)
    assert f"{a}: invalid jobs file" in msg and f"{b}: invalid jobs file" in msg


def test_a_bad_package_header_and_a_header_in_the_site_config(tmp_path: Path) -> None:
    ext = write(tmp_path / "ext.toml", '[package]\nversion = "1"\nhomepage = "x"\n' + job("j"))
    msg = err(site(tmp_path, []), ext)
    assert "  package.name: is required" in msg and "  package.homepage: unknown key" in msg
    write(tmp_path / "ext.toml", '[package]\nname = " Echo"\n' + job("j"))
    assert "package.name: must be 1-100 printable characters" in err(site(tmp_path, []), ext)
    assert "a [package] header belongs in a jobs file" in err(site(tmp_path, [], inline='[package]\nname = "x"\n'))


def test_a_job_name_defined_twice_names_both_files(tmp_path: Path) -> None:
    a = write(tmp_path / "etc" / "ext" / "a" / "backfills.toml", '[package]\nname = "A"\nversion = "2"\n' + job("x"))
    b = write(tmp_path / "etc" / "ext" / "b" / "backfills.toml", job("y") + job("x"))
    msg = err(site(tmp_path, ["ext/*/backfills.toml"]))
    assert msg == (f"two jobs are named 'x': in {a} (jobs[0], shipped by A 2) and in {b} (jobs[1]); job names must "
                   "be unique across the config and its jobs files: rename one")
    cfg_path = site(tmp_path, [], inline=job("x"))
    assert f"in {cfg_path} (jobs[0]) and in {a} (jobs[0]" in err(cfg_path, a)
    assert "two jobs are named 'x'" in err(site(tmp_path, [], inline=job("x") + job("x")))


def test_after_naming_no_job_the_job_itself_or_a_cycle_is_refused_naming_file_job_and_key(tmp_path: Path) -> None:
    ext = write(tmp_path / "ext.toml", job("a", after=("b",)) + job("b", after=("c",)) + job("c", after=("a",))
                + job("d", after=("d",)) + job("e", after=("nope",)))
    msg = err(site(tmp_path, []), ext)
    assert msg.splitlines() == [
        "3 problems:",
        f"- {ext}: jobs[3].after (job 'd'): names the job itself",
        f"- {ext}: jobs[4].after (job 'e'): names 'nope', which is no job of the config or its jobs files "
        "(jobs: a, b, c, d, e)",
        f"- {ext}: jobs[0].after (job 'a'): the jobs wait for each other in a cycle, so none of them could start: "
        f"a ({ext}) -> b ({ext}) -> c ({ext}) -> a ({ext}); remove one of these after entries"]
    write(ext, job("a", after=("a2", "a2")))
    assert "jobs[0].after (job 'a'): names a job twice" in err(site(tmp_path, []), ext)


def test_after_may_name_a_job_of_another_file_and_moves_the_job_after_it(tmp_path: Path) -> None:
    core = write(tmp_path / "core.toml", job("core_1") + job("core_2"))
    ext = write(tmp_path / "ext.toml", job("ext_1", after=("core_2",)) + job("ext_0"))
    cfg = config.load(site(tmp_path, [], inline=job("own", after=("ext_1",))), [ext, core])
    assert [j.name for j in cfg.jobs] == ["own", "ext_1", "ext_0", "core_1", "core_2"]   # as defined
    assert [j.name for j in cfg.run_order()] == ["ext_0", "core_1", "core_2", "ext_1", "own"]


def test_run_order_is_stable_and_moves_a_job_back_only_as_far_as_it_must() -> None:
    c = config.from_dict({"database": {"url": "sqlite:///a.db"}, "jobs": [
        {"name": n, "table": "t", "set": {"c": "1"}, "after": after} for n, after in
        [("d", ["b"]), ("a", []), ("b", []), ("c", []), ("e", ["d", "a"])]]})
    assert [j.name for j in c.run_order()] == ["a", "b", "d", "c", "e"]
    # without after, the defined order; an after naming a job outside those given is left to the daemon
    assert [j.name for j in jobfiles.run_order([c.job("e"), c.job("c"), c.job("b")])] == ["e", "c", "b"]


def test_the_site_config_alone_when_asked_for_its_settings_only(tmp_path: Path) -> None:
    cfg_path = site(tmp_path, ["ext/gone.toml"], inline='[throttle]\nmax_lag_s = 2.5\n' + job("own"))
    assert "no such jobs file" in err(cfg_path)
    cfg = config.load(cfg_path, read_jobs_files=False)   # SIGHUP: only [throttle] is applied
    assert cfg.throttle.max_lag_s == 2.5 and [j.name for j in cfg.jobs] == ["own"]


def test_the_example_jobs_file_is_valid_and_its_jobs_run_in_order() -> None:
    cfg = config.load(ROOT / "config" / "example.toml", [ROOT / "config" / "example-jobs.toml"])
    shipped = [j for j in cfg.jobs if j.origin.jobs_file]
    assert shipped and all(j.origin.shipped_by for j in shipped)
    assert any(j.after for j in shipped)
    order = [j.name for j in cfg.run_order()]
    assert all(order.index(dep) < order.index(j.name) for j in cfg.jobs for dep in j.after)


@hsettings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_jobs_file_content_loads_or_is_a_config_error_naming_it(tmp_path: Path, raw: bytes) -> None:
    ext = tmp_path / "fuzz.toml"
    ext.write_bytes(raw)
    try:
        config.read_jobs_file(ext)
    except ConfigError as exc:
        assert str(exc).startswith(str(ext))
