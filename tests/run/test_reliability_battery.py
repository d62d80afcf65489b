"""A hostile user and a crashing machine, third round: outputs that never clobber, stores that never
double-count, failures that are never lost, input that cannot exhaust memory."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from resbench import plugins
from resbench.cli import main
from resbench.errors import UsageError
from resbench.run.store import ResultStore
from tests.helpers import MINIMAL_SUITE as TINY_SUITE
from tests.helpers import PROVENANCE, make_trial, one_line_error, small_store

# -- outputs that never clobber -----------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_output_to_a_device_is_refused_and_the_device_kept(command: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = small_store(tmp_path)
    device = tmp_path / "null"  # a link to /dev/null: a write that replaced its path would replace only the link
    device.symlink_to("/dev/null")
    assert main([command, "--store", str(store), "--output", str(device)]) == 2
    assert f"--output {device}: is a character device; name a file" in one_line_error(capsys)
    assert device.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_output_to_a_fifo_is_refused_and_the_fifo_kept(command: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = small_store(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main([command, "--store", str(store), "--output", str(fifo)]) == 2
    assert f"--output {fifo}: is a FIFO (named pipe); name a file" in one_line_error(capsys)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_output_through_a_symlink_writes_its_target(command: str, tmp_path: Path) -> None:
    store = small_store(tmp_path)
    target = tmp_path / "kept" / "board.txt"
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "board.txt"
    link.symlink_to(target)
    assert main([command, "--store", str(store), "--output", str(link)]) == 0
    assert link.is_symlink() and target.read_text(encoding="utf-8") not in ("", "old")


# -- stores that never double-count -------------------------------------------------------------------------


def _empty_trials_index(path: Path) -> None:
    """Damage the store as a bad sector would: the trials key index loses its entries, yet every page stays
    well formed (``PRAGMA quick_check`` passes)."""
    with sqlite3.connect(path) as connection:
        root, page_size = connection.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
            "WHERE name = 'sqlite_autoindex_trials_1'").fetchone()
    connection.close()
    data = bytearray(path.read_bytes())
    header = (root - 1) * page_size
    assert data[header] == 0x0A, "the index must fit one leaf page"
    data[header + 1: header + 8] = b"\0\0\0\0" + page_size.to_bytes(2, "big") + b"\0"  # no cells, no free space
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    connection.close()


def test_a_damaged_trials_index_is_rebuilt_before_a_run_writes(tmp_path: Path) -> None:
    path = small_store(tmp_path)
    _empty_trials_index(path)
    with ResultStore(path, exclusive=True) as store:
        first = store.trials_frame().iloc[0]
        again = make_trial(str(first["cell_id"]), int(first["trial"]), 1.0)
        assert store.add_trials([again], store.start_run(PROVENANCE)) == 0  # already stored: not written twice
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        pairs = connection.execute("SELECT count(*), count(DISTINCT cell_id || '/' || trial) FROM trials").fetchone()
    connection.close()
    assert pairs[0] == pairs[1] == 20


def test_a_store_holding_a_trial_twice_is_refused(tmp_path: Path) -> None:
    path = small_store(tmp_path)
    _empty_trials_index(path)
    with sqlite3.connect(path) as connection:  # what a run through the damaged index wrote
        connection.execute("INSERT INTO trials SELECT * FROM trials NOT INDEXED LIMIT 1")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match=f"^{path}: the store is damaged \\(1 keys held by more than one row; "):
        ResultStore(path, exclusive=True)
    assert path.read_bytes() == before


def test_reports_refuse_a_store_whose_index_is_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = small_store(tmp_path)
    _empty_trials_index(path)
    assert main(["export", "--store", str(path)]) == 2
    assert f"{path}: the store is damaged (row 1 missing from index" in one_line_error(capsys)


@pytest.fixture
def killed_run_on_read_only_media(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files a killed run leaves (store, write-ahead log, no shared-memory file) on read-only media."""
    from resbench.run import store as store_module

    writer_folder, media = tmp_path / "writer", tmp_path / "media"
    media.mkdir()
    path = small_store(writer_folder)
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE trials SET accuracy = accuracy")
    with writer:
        writer.execute("INSERT INTO trials SELECT cell_id, trial + 100, seed, accuracy, sdc_rate, critical_sdc_rate, "
                       "due_rate, flips, reused, seconds, flips_per_bit, flips_per_tensor, run_id, effective_flips, "
                       "stratum FROM trials")
    for name in (path.name, f"{path.name}-wal"):  # copied while the writer holds them, as a kill leaves them
        (media / name).write_bytes((writer_folder / name).read_bytes())
    writer.close()
    connect = sqlite3.connect

    def read_only_media(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if str(media) in database and "mode=ro" in database:  # SQLite cannot create the -shm file there
            raise sqlite3.OperationalError("unable to open database file")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only_media)
    monkeypatch.setattr(store_module.os, "access", lambda folder, mode: Path(folder) != media)
    return media / path.name


def test_a_killed_runs_log_on_read_only_media_is_never_ignored(killed_run_on_read_only_media: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = killed_run_on_read_only_media
    assert main(["export", "--store", str(path)]) == 2
    assert f"{path}: a run stopped before closing this store" in one_line_error(capsys)


def test_an_unrelated_database_with_resbench_table_names_is_left_alone(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript("CREATE TABLE runs (id INTEGER); CREATE TABLE cells (x TEXT); "
                                 "CREATE TABLE trials (y REAL);")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="not a resbench store \\(it holds tables cells, runs, trials"):
        ResultStore(path, exclusive=True)
    assert path.read_bytes() == before


def test_an_empty_database_of_another_application_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 7")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="not a resbench store \\(a SQLite database of no tables, user version 7\\)"):
        ResultStore(path, exclusive=True)
    assert path.read_bytes() == before


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    path.touch()
    with ResultStore(path, exclusive=True) as store:
        assert store.trials_frame().empty


# -- failures that are never lost ---------------------------------------------------------------------------


@pytest.fixture
def fails_mid_campaign(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault model (plugin ``resbench_flaky``) that raises on its sixth draw, after rows were computed (two
    draws per trial, one per BER; the first is drawn twice, to check that it replays)."""
    from resbench.engine.faults import BernoulliFaults, FaultModelOptions

    class Flaky(BernoulliFaults):
        calls = 0

        def sample_sites(self, *arguments: Any) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 6:
                raise RuntimeError("device lost")
            return super().sample_sites(*arguments)

    module = ModuleType("resbench_flaky")
    module.register_fault_models = plugins.hookimpl(  # type: ignore[attr-defined]
        lambda register: register("flaky", Flaky, options=FaultModelOptions))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module.__name__))
    plugins.reset_registries()


@pytest.mark.usefixtures("fails_mid_campaign")
def test_every_failed_cell_stays_recorded_and_out_of_the_ranking(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE.replace("bers: [1.0e-3]", "bers: [1.0e-3, 1.0e-2]").replace("trials: 2", "trials: 4"),
                     encoding="utf-8")
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--faults", "flaky", "--store", str(store), "--cache-dir", str(tmp_path / "c"),
                 "--report-dir", str(tmp_path / "reports"), "--no-progress"]) == 1
    assert "resbench: 3 cells failed" in capsys.readouterr().err
    with ResultStore.open_existing(store) as opened:
        failures, trials = opened.failures_frame(), opened.trials_frame()
    assert sorted(failures["ber"]) == [0.0, 1e-3, 1e-2]
    assert (trials["ber"] > 0).any(), "rows were computed before the failure"
    assert main(["leaderboard", "--store", str(store), "--format", "json"]) == 0
    rows = [row for table in json.loads(capsys.readouterr().out)["tables"] for row in table["rows"]]
    assert rows and all(row["score"] is None for row in rows)


# -- input that cannot exhaust memory, and answers that name the real problem --------------------------------

ALIAS_BOMB = "\n".join(
    ["version: 1", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, 9)]
    + ["training: {bomb: *a8}", ""]
)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_yaml_alias_bomb_is_refused_quickly(command: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "bomb.yaml"
    suite.write_text(ALIAS_BOMB, encoding="utf-8")
    extra = ["--store", str(tmp_path / "r.sqlite"), "--no-progress"] if command == "run" else []
    assert main([command, str(suite), *extra]) == 2
    assert f"{suite}: the suite expands to more than 100,000 values (through YAML aliases)" in one_line_error(capsys)
    assert [path.name for path in tmp_path.iterdir()] == ["bomb.yaml"]


def test_aliases_that_stay_small_are_fine(write_suite: Any, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite("version: 1\nbers: &sweep [1.0e-5, 1.0e-4]\nfault_space: {}\nmethods: [none]\n")
    assert main(["validate", str(suite)]) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("methods: [none, none]", "methods: none is listed twice"),
    ("methods: [{name: none}, none]", "methods: none is listed twice"),
    ("formats: [fp32, fp16, fp32]", "formats: fp32 is listed twice"),
])
def test_an_item_listed_twice_is_refused(text: str, message: str, write_suite: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(write_suite(f"version: 1\n{text}\n"))]) == 2
    assert message in one_line_error(capsys)


def test_the_same_item_with_other_options_is_two_items(write_suite: Any) -> None:
    suite = write_suite("version: 1\ndatasets: [{name: synthetic, seed: 1}, {name: synthetic, seed: 2}]\n")
    assert main(["validate", str(suite)]) == 0


def test_an_unknown_key_in_a_method_item_lists_the_items_keys(write_suite: Any,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite("version: 1\nmethods: [{name: none, options: {}, extra: 2}]\n")
    assert main(["validate", str(suite)]) == 2
    assert one_line_error(capsys).endswith("methods.0.extra: unknown option (allowed: name, options)\n")


def test_every_line_of_several_problems_is_marked_as_an_error(write_suite: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite("version: 1\nmethods: [{name: ranger, bogus: 1}, {name: fitact, bogus: 2}]\n")
    assert main(["validate", str(suite)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("resbench: error: ") for line in lines), lines


ACT_SINGLE_SUITE = TINY_SUITE + "faults: [{name: act-single, operators: [linear], names: ['nothing.*']}]\n"


def test_activation_faults_that_choose_no_operator_fail_validation(write_suite: Any,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(ACT_SINGLE_SUITE)
    assert main(["validate", str(suite)]) == 2
    error = one_line_error(capsys)
    assert "model test-mlp: no operator of the model matches operators ['linear'] and names ['nothing.*']" in error


def test_activation_faults_that_choose_no_operator_are_bad_input_before_the_store(
    write_suite: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite(ACT_SINGLE_SUITE)
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite), "--store", str(store), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "no operator of the model matches" in one_line_error(capsys)
    assert not store.exists()


def test_a_read_only_store_file_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from resbench.run import store as store_module

    path = small_store(tmp_path)
    connect = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect",  # the file's permissions allow reading only
                        lambda database, *args, **kwargs: connect(f"file:{database}?mode=ro", uri=True))
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE, encoding="utf-8")
    assert main(["run", str(suite), "--store", str(path), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "it is read-only; pass another --store" in one_line_error(capsys)


def test_a_full_disk_while_caching_a_baseline_blames_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE, encoding="utf-8")
    assert main(["run", str(suite), "--store", str(tmp_path / "r.sqlite"), "--cache-dir", str(tmp_path / "c"),
                 "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert f"baseline failed in plugin resbench: cannot store the baseline in the artifact cache {tmp_path / 'c'}: " \
           "No space left on device" in error, error


def test_more_workers_than_the_machine_can_run_are_bad_input(write_suite: Any,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    workers = 4 * (os.cpu_count() or 1) + 1
    suite = write_suite(f"version: 1\nexecutor: {{name: process, workers: {workers}}}\n")
    assert main(["validate", str(suite)]) == 2
    assert f"workers: at most {workers - 1} on this machine" in one_line_error(capsys)


def test_a_worker_the_system_cannot_start_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from resbench.errors import ResbenchError
    from resbench.run.executors import ProcessExecutor, ProcessOptions, _Pool

    def start_worker(pool: _Pool, worker: int) -> None:
        if worker == 1:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(_Pool, "start_worker", start_worker)
    executor = ProcessExecutor(ProcessOptions(workers=2))
    with pytest.raises(ResbenchError, match=r"^cannot start worker process 2 of 2: Resource temporarily unavailable; "
                                            r"pass fewer --workers$"):
        list(executor.map([lambda: iter(())]))


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_ray_address_where_nothing_listens_is_bad_input_before_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'resbench[ray]')")

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was asked to connect")

    monkeypatch.setattr(ray, "init", never)
    address = f"127.0.0.1:{_closed_port()}"
    store = tmp_path / "r.sqlite"
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE, encoding="utf-8")
    assert main(["run", str(suite), "--executor", "ray", "--address", address, "--store", str(store),
                 "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 2
    assert f"--address {address}: no Ray cluster answers there (Connection refused)" in one_line_error(capsys)
    assert not store.exists()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process they started, from /proc."""
    parents = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(status.parent.name)] = int(status.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1])
    family = list(pids)
    for pid in family:
        family += [child for child, parent in parents.items() if parent == pid and child not in family]
    return family


RAY_DRIVER = """
import sys
import ray
from resbench.run.ray_executor import RayExecutor, RayOptions, _ray_processes
RayExecutor(RayOptions(cpus=1))._connect()
print(" ".join(map(str, _ray_processes(ray))), flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_ray_started_here_does_not_outlive_a_killed_driver() -> None:
    import subprocess
    import time

    pytest.importorskip("ray", reason="ray is not installed (pip install 'resbench[ray]')")
    with subprocess.Popen([sys.executable, "-c", RAY_DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as driver:
        assert driver.stdout is not None
        pids = [int(pid) for pid in driver.stdout.readline().split()]
        assert pids and all(_alive(pid) for pid in pids)
        family = _descendants(pids)
        driver.kill()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in family if _alive(pid)]
