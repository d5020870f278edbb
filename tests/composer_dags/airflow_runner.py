"""Runs inside an Airflow virtualenv (.venv-airflow2 / 3), driven by test_adroi_continuous_training.py.

    python airflow_runner.py inspect OUT.json
        parse the DAGs folder with DagBag (timed) and describe the DAG: tasks, dependencies, retries, emails,
        trigger rules, schedule, params, and the retry delays this Airflow computes for three failures
    python airflow_runner.py test OUT.json RUNS.json
        `dag.test()` each run of RUNS.json ([{"name", "logical_date", "conf"}], in one process so Airflow
        starts once); writes, per name, the run's state and each task's state, or the error that refused it

Needs AIRFLOW_HOME with a migrated database and AIRFLOW__CORE__DAGS_FOLDER. Failure emails go to the
`record_email` backend (AIRFLOW__EMAIL__EMAIL_BACKEND=airflow_runner.record_email), which appends them to the
JSON-lines file named by DAG_TEST_EMAIL_LOG.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

DAG_ID = "adroi_continuous_training"


def record_email(to: list[str] | str, subject: str, html_content: str, **kwargs: Any) -> None:
    """Email backend that writes each message to DAG_TEST_EMAIL_LOG instead of sending it."""
    with open(os.environ["DAG_TEST_EMAIL_LOG"], "a") as log:
        log.write(json.dumps({"to": to, "subject": subject}) + "\n")


def load_dagbag() -> tuple[Any, float]:
    """Parse the DAGs folder; return the DagBag and the seconds it took."""
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
    except ImportError:
        from airflow.models.dagbag import DagBag
    started = time.perf_counter()
    dagbag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    return dagbag, time.perf_counter() - started


def retry_delays(task: Any, failures: int) -> list[float]:
    """Seconds this Airflow waits before each retry of `task` (its own TaskInstance.next_retry_datetime)."""
    import logging
    from types import SimpleNamespace

    from airflow.models.taskinstance import TaskInstance

    end_date = datetime(2026, 1, 1)
    # Only the retry arithmetic of TaskInstance is used, on the attributes it reads: no database row.
    ti = SimpleNamespace(task=task, dag_id=task.dag_id, task_id=task.task_id, execution_date=end_date,
                         logical_date=end_date, end_date=end_date, retry_delay_override=None,
                         log=logging.getLogger(__name__))
    delays = []
    for try_number in range(1, failures + 1):
        ti.try_number = try_number
        delays.append((TaskInstance.next_retry_datetime(ti) - end_date).total_seconds())
    return delays


def describe(out: dict[str, Any]) -> None:
    """Describe the parsed DAG."""
    import airflow

    dagbag, seconds = load_dagbag()
    out.update(airflow_version=airflow.__version__, parse_seconds=seconds, dag_ids=sorted(dagbag.dag_ids),
               import_errors={path: str(error) for path, error in dagbag.import_errors.items()})
    dag = dagbag.get_dag(DAG_ID)
    out["dag"] = {
        "schedule": str(getattr(dag, "schedule_interval", None) or dag.schedule),  # 2.x | 3.x
        "start_date": dag.start_date.isoformat(),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags),
        "doc_md": dag.doc_md,
        "params": {name: dag.params.get_param(name).schema for name in dag.params},
        "param_defaults": dag.params.dump(),
    }
    out["tasks"] = {
        t.task_id: {
            "upstream": sorted(t.upstream_task_ids),
            "downstream": sorted(t.downstream_task_ids),
            "retries": t.retries,
            "retry_delays": retry_delays(t, 3) if t.retries else [],
            "max_retry_delay": t.max_retry_delay.total_seconds() if t.max_retry_delay else None,
            "email": [t.email] if isinstance(t.email, str) else list(t.email or []),
            "email_on_failure": t.email_on_failure,
            "email_on_retry": t.email_on_retry,
            "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
            "operator": type(t).__name__,
            "ignore_downstream_trigger_rules": getattr(t, "ignore_downstream_trigger_rules", None),
        }
        for t in dag.tasks
    }


def run_dag_tests(out: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """`dag.test()` each run in turn; report the run's and its tasks' states, or the error that refused it."""
    dagbag, _ = load_dagbag()
    dag = dagbag.get_dag(DAG_ID)
    test_args = inspect.signature(dag.test).parameters
    date_arg = "logical_date" if "logical_date" in test_args else "execution_date"  # Airflow 3 | 2
    for run in runs:
        result = out[run["name"]] = {}
        try:
            logical_date = datetime.fromisoformat(run["logical_date"])
            # A freshly parsed DAG per run: in one process a run's conf is written into the Param objects its
            # tasks share with the DAG and would leak into the next run's params (one process per task in
            # production).
            dag = load_dagbag()[0].get_dag(DAG_ID)
            dag_run = dag.test(**{date_arg: logical_date}, run_conf=run["conf"])
        except Exception as exc:  # a refused trigger (bad params)
            result.update(error=type(exc).__name__, message=str(exc))
            continue
        result.update(
            run_id=dag_run.run_id,
            state=str(getattr(dag_run.state, "value", dag_run.state)),
            tasks={ti.task_id: str(getattr(ti.state, "value", ti.state))
                   for ti in dag_run.get_task_instances()},
        )


def main(argv: list[str]) -> int:
    """Run one command and write its JSON result to the given file."""
    command, path, *rest = argv
    out: dict[str, Any] = {}
    if command == "inspect":
        describe(out)
    elif command == "test":
        with open(rest[0]) as f:
            run_dag_tests(out, json.load(f))
    else:
        raise SystemExit(f"unknown command {command!r}: expected inspect or test")
    with open(path, "w") as f:
        json.dump(out, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
