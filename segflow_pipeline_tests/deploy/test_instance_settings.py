"""deploy/dagster.yaml's connection settings take effect on the connections Dagster opens to PostgreSQL."""

import pytest

from segflow_pipeline_tests.deploy import harness

pytestmark = pytest.mark.slow


def test_event_log_commits_do_not_wait_for_the_disk(postgres, tmp_path, monkeypatch):
    """The instance's own engine (the one that stores every event of every run) runs with synchronous_commit off,
    while the server's default, read on a connection of our own, stays on: the setting is the instance's."""
    import dagster as dg

    db = harness.create_database(postgres, "settings")
    for key, value in db.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(harness.write_dagster_home(tmp_path / "home")))
    instance = dg.DagsterInstance.get()
    try:
        engine = instance.event_log_storage._engine
        with engine.connect() as con:
            setting = con.exec_driver_sql("show synchronous_commit").scalar()
    finally:
        instance.dispose()
    assert setting == "off"
    assert harness.query(db, "show synchronous_commit") == [("on",)]


def _instance(postgres, tmp_path, monkeypatch, name: str):
    import dagster as dg

    db = harness.create_database(postgres, name)
    for key, value in db.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(harness.write_dagster_home(tmp_path / "home")))
    return db, dg.DagsterInstance.get()


def _log_events(instance, run_id: str, n: int) -> None:
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
    from dagster._core.events.log import EventLogEntry

    for i in range(n):
        event = DagsterEvent(event_type_value=DagsterEventType.ENGINE_EVENT.value, job_name="j",
                             message=f"event {i}", event_specific_data=EngineEventData())
        instance.store_event(EventLogEntry(error_info=None, level=20, user_message=f"event {i}", run_id=run_id,
                                           timestamp=float(i), dagster_event=event, job_name="j"))
    assert dg  # the import above registers Dagster's serializers


def test_the_instance_keeps_its_connections_open_between_events(postgres, tmp_path, monkeypatch):
    """Dagster's stock PostgreSQL storages open a connection per statement; the deployment's (instance_storage.py)
    open one per process and storage: 50 events, at most one new connection, and every one keeps the settings."""
    from sqlalchemy import event

    _, instance = _instance(postgres, tmp_path, monkeypatch, "pool")
    try:
        storage = instance.event_log_storage
        opened = []
        event.listen(storage._engine, "connect", lambda *_: opened.append(1))
        _log_events(instance, "run-pool", 50)
        assert len(instance.all_logs("run-pool")) == 50
        assert len(opened) <= 1
        with storage._engine.connect() as con:
            assert con.exec_driver_sql("show synchronous_commit").scalar() == "off"
        assert type(storage).__name__ == "PooledPostgresEventLogStorage"
        assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"
        assert type(instance.schedule_storage).__name__ == "PooledPostgresScheduleStorage"
    finally:
        instance.dispose()


def test_an_event_after_the_server_dropped_the_connection_is_stored(postgres, tmp_path, monkeypatch):
    """A kept connection the server has closed (a restart, an idle timeout) is replaced before use, not failed on."""
    db, instance = _instance(postgres, tmp_path, monkeypatch, "dropped")
    try:
        _log_events(instance, "run-before", 3)
        killed = harness.query(db, "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                   "where datname = current_database() and pid <> pg_backend_pid()")[0][0]
        assert killed >= 1
        _log_events(instance, "run-after", 3)
        assert len(instance.all_logs("run-after")) == 3
    finally:
        instance.dispose()
