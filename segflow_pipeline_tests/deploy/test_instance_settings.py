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
