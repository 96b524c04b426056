"""The fault scenarios. Each one configures a run (settings, processes, simulator), injects its
fault at a random moment of the load (seeded: `run.rng`) and says which verify findings its
fault legitimately causes (none, except where noted)."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any, ClassVar

import orjson
import psutil

from orchestrator.core.queues import ALL_QUEUES
from orchestrator.devtools.verify import Code, Problem
from tests.faults.load import Sent
from tests.faults.runner import RELAY_QUEUE, TIMED_OUT, WORK_QUEUES, Run, pool_children


class Scenario:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # The fault lasts the whole load (the clock of "time to recover" starts at its end).
    continuous: ClassVar[bool] = False
    # The fault comes at a random moment in this fraction of the load's duration.
    window: ClassVar[tuple[float, float]] = (0.15, 0.6)
    scores: ClassVar[str | None] = None
    simulator_args: ClassVar[tuple[str, ...]] = ()
    duplicate_commands: ClassVar[bool] = False
    duplicate_results: ClassVar[bool] = False
    tap_results: ClassVar[bool] = False
    extra_settle_s: ClassVar[float] = 0.0

    def overrides(self, run: Run) -> dict[str, str]:
        return {}

    def env_for(self, run: Run, role: str) -> dict[str, str]:
        return {}

    def start_workers(self, run: Run) -> None:
        run.worker_role("worker")

    def on_command(self, run: Run, sent: Sent) -> None:
        pass

    def inject(self, run: Run) -> None:
        raise NotImplementedError

    def allowed_problem(self, run: Run, p: Problem) -> bool:
        return False

    def check(self, run: Run, problems: list[str], db: dict[str, Any]) -> None:
        pass


def wait_child_death(run: Run, role: str, children: list[int], timeout: float) -> bool:
    """True once one of the pool children has exited, or the role's log shows a crash point
    reached (a child that died before `children` was taken, and was replaced since)."""
    log_file = run.supervisor.proc(role).log
    deadline = time.monotonic() + timeout
    next_log_check = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_log_check:
            next_log_check = time.monotonic() + 0.5
            if '"orchestrator_crash_point"' in log_file.read_text(errors="replace"):
                return True
        for pid in children:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
        time.sleep(0.02)
    return False


# -- process kills --------------------------------------------------------------------------------


class KillIngester(Scenario):
    name = "kill_ingester"
    description = (
        "the ingester is SIGKILLed at a random moment, or kills itself at a random crash point"
        " (before / after the inbox commit, after the offset store); it is started again"
    )
    POINTS = ("ingest.before_commit", "ingest.after_commit", "ingest.after_offsets")

    def env_for(self, run: Run, role: str) -> dict[str, str]:
        if role != "ingester":
            return {}
        if run.rng.random() < 0.4:
            run.mode = "sigkill"
            return {}
        point = run.rng.choice(self.POINTS)
        nth = run.rng.randint(3, max(4, run.opts.commands // 2))
        run.mode = f"{point}:{nth}"
        return {"ORCHESTRATOR_CRASH_AT": f"{point}:{nth}"}

    def inject(self, run: Run) -> None:
        role = run.supervisor.roles["ingester"]
        if run.mode == "sigkill":
            run.mark_fault("SIGKILL the ingester")
            run.supervisor.kill("ingester")
            return
        # The crash point fires by itself: wait for the exit the supervisor sees.
        deadline = time.monotonic() + (run.load.duration_s if run.load else 60) + 30
        while not role.exits and time.monotonic() < deadline:
            time.sleep(0.02)
        if role.exits:
            role.expected_exits += 1
            run.fault_at = role.exits[0][0]
            run.log(f"fault: the ingester killed itself at {run.mode}")
        else:
            run.notes["fault_not_reached"] = run.mode


class KillWorkerMidTask(Scenario):
    name = "kill_worker_mid_task"
    description = (
        "a worker's pool child is SIGKILLed at a random moment (the worker replaces it), or every"
        " child kills itself inside a row's transaction (crash point drain.before_commit:n) and"
        " the whole worker is then replaced"
    )

    def env_for(self, run: Run, role: str) -> dict[str, str]:
        return {}

    def start_workers(self, run: Run) -> None:
        r = run.rng.random()
        if r < 0.4:
            nth = run.rng.randint(3, max(4, run.opts.commands // 3))
            run.mode = f"drain.before_commit:{nth}"
            run.worker_role("worker", ORCHESTRATOR_CRASH_AT=run.mode)
        else:
            run.mode = "sigkill-child" if r < 0.8 else "sigkill-worker"
            run.worker_role("worker")

    def inject(self, run: Run) -> None:
        worker = run.supervisor.proc("worker")
        children = pool_children(worker)
        if run.mode == "sigkill-child":
            pid = run.rng.choice(children)
            run.mark_fault(f"SIGKILL pool child {pid}")
            psutil.Process(pid).send_signal(signal.SIGKILL)
            return
        if run.mode == "sigkill-worker":
            run.mark_fault("SIGKILL the worker and its pool")
            run.supervisor.kill("worker")
            return
        if wait_child_death(
            run, "worker", children, (run.load.duration_s if run.load else 60) + 30
        ):
            run.mark_fault(f"a pool child killed itself at {run.mode}; the worker is replaced")
            run.supervisor.kill("worker")
        else:
            run.notes["fault_not_reached"] = run.mode


class KillRelayMidBatch(Scenario):
    name = "kill_relay_mid_batch"
    description = (
        "the relay (its own worker on the relay queue) dies after publishing a batch and before"
        " marking it SENT (crash point relay.after_publish:n), or its pool child is SIGKILLed at"
        " a random moment; the relay worker is then replaced"
    )

    def start_workers(self, run: Run) -> None:
        run.worker_role("worker", queues=WORK_QUEUES)
        if run.rng.random() < 0.7:
            nth = run.rng.randint(2, max(3, run.opts.commands // 8))
            run.mode = f"relay.after_publish:{nth}"
            run.worker_role(
                "relay", queues=RELAY_QUEUE, concurrency=1, ORCHESTRATOR_CRASH_AT=run.mode
            )
        else:
            run.mode = "sigkill-relay-child"
            run.worker_role("relay", queues=RELAY_QUEUE, concurrency=1)

    def inject(self, run: Run) -> None:
        relay = run.supervisor.proc("relay")
        children = pool_children(relay)
        if run.mode == "sigkill-relay-child":
            pid = children[0]
            run.mark_fault(f"SIGKILL relay pool child {pid}")
            psutil.Process(pid).send_signal(signal.SIGKILL)
            return
        if wait_child_death(run, "relay", children, (run.load.duration_s if run.load else 60) + 30):
            run.mark_fault(f"the relay killed itself at {run.mode}; the relay worker is replaced")
            run.supervisor.kill("relay")
        else:
            run.notes["fault_not_reached"] = run.mode


class KillBeat(Scenario):
    name = "kill_beat"
    description = "beat is SIGKILLed at a random moment and started again 1-5 s later"

    def inject(self, run: Run) -> None:
        down = run.rng.uniform(1, 5)
        run.mode = f"down {down:.1f}s"
        with run.supervisor.holding("beat"):
            run.mark_fault("SIGKILL beat")
            run.supervisor.kill("beat")
            time.sleep(down)
            run.supervisor.restart_now("beat")
            run.log("beat started again")


class ConsistencyUnanswered(Scenario):
    """Consistency checks are never answered (3 s timeout): every stage validation must time
    out exactly once, and nothing else."""

    simulator_args = ("--silent", "Review.Consistency.CheckRequested")
    extra_settle_s = 10.0

    def overrides(self, run: Run) -> dict[str, str]:
        return {"ORCHESTRATOR_TASK_TIMEOUTS": '{"Review.Consistency": 3}'}

    def check(self, run: Run, problems: list[str], db: dict[str, Any]) -> None:
        check_timeouts(run, problems, db, "Stage.Validate")


class TwoBeats(ConsistencyUnanswered):
    name = "two_beats"
    description = (
        "a second beat starts at a random moment and both run to the end; consistency checks are"
        " never answered (3 s timeout), so both beats race to time the same tasks out"
    )

    def inject(self, run: Run) -> None:
        from tests.faults.runner import Role

        run.mode = "second beat"
        run.mark_fault("a second beat starts")
        run.supervisor.add(Role("beat2", lambda e: run.s.start_beat("beat2", **e)))


def check_timeouts(run: Run, problems: list[str], db: dict[str, Any], command_type: str) -> None:
    """Every command of `command_type` timed out exactly once, and nothing else did."""
    assert run.load is not None
    silent = [s for s in run.load.sent if s.command_type == command_type]
    rows = run.s.rows(
        "SELECT correlation_id, count(*) FROM domain_events WHERE event_type = :t"
        " GROUP BY correlation_id",
        t=TIMED_OUT,
    )
    by_corr = {r[0]: r[1] for r in rows}
    missing = [s for s in silent if by_corr.get(s.correlation_id, 0) != 1]
    if missing:
        problems.append(
            f"{len(missing)} {command_type} command(s) without exactly one TimedOut fact, e.g."
            f" {missing[0].event_id}"
        )
    others = set(by_corr) - {s.correlation_id for s in silent}
    if others:
        problems.append(f"{len(others)} unexpected timeout(s) of answered tasks")
    run.notes["timed_out_by_type"] = dict(db["timed_out_by_type"])


# -- infrastructure restarts --------------------------------------------------------------------


class RedisRestartDataLost(Scenario):
    name = "redis_restart_data_lost"
    description = (
        "Redis (broker, locks, markers) is SIGKILLed at a random moment and started empty at the"
        " same port 0.5-3 s later: queued triggers, unacked tasks, locks and markers are gone"
    )

    def inject(self, run: Run) -> None:
        down = run.rng.uniform(0.5, 3)
        run.mode = f"down {down:.1f}s"
        queued = _redis_queue_length(run)
        run.mark_fault(f"SIGKILL Redis ({queued} trigger(s) queued)")
        run.redis.kill()
        time.sleep(down)
        run.redis.start_again()
        run.log("Redis started again, empty")


def _redis_queue_length(run: Run) -> int:
    import redis

    client = redis.Redis.from_url(run.redis.url)
    try:
        total = 0
        for q in ALL_QUEUES:
            total += int(client.llen(q))  # type: ignore[arg-type]
        return total
    except redis.RedisError:
        return -1
    finally:
        client.close()


class PostgresRestart(Scenario):
    name = "postgres_restart"
    description = (
        "PostgreSQL is stopped in immediate mode (SIGQUIT, no checkpoint) at a random moment and"
        " started again on the same data directory and port 0.5-3 s later"
    )

    def inject(self, run: Run) -> None:
        down = run.rng.uniform(0.5, 3)
        run.mode = f"down {down:.1f}s"
        run.mark_fault("PostgreSQL stop -m immediate")
        run.postgres.stop_immediate()
        time.sleep(down)
        run.postgres.start_again()
        run.log("PostgreSQL started again")


class KafkaRestart(Scenario):
    name = "kafka_restart"
    description = (
        "the Kafka broker (Tansu, memory storage) is SIGKILLed at a random moment and started"
        " again at the same port 0.5-3 s later with no topics, no records and no committed"
        " offsets; the operator recreates the topics (`orchestrator topics create`) and every"
        " input (commands, and the capability results seen so far) is produced again"
    )
    tap_results = True
    # Requests the relay delivered to the lost broker are never answered: their tasks time out.
    extra_settle_s = 20.0

    def overrides(self, run: Run) -> dict[str, str]:
        return {"ORCHESTRATOR_TASK_TIMEOUT_S": "10"}

    def inject(self, run: Run) -> None:
        assert run.load is not None and run.tap is not None
        down = run.rng.uniform(0.5, 6)
        run.mode = f"down {down:.1f}s"
        run.mark_fault("SIGKILL the Kafka broker")
        run.kafka.kill()
        time.sleep(down)
        run.kafka.start_again()
        run.notes["broker_restarted_db_time"] = _db_epoch(run)
        run.log("Kafka started again (empty)")
        done = run.s.cli("topics", "create")
        run.log(
            f"topics create: rc {done.returncode} {done.stdout.strip()}"
            f" {done.stderr.strip()[-300:]}"
        )
        if done.returncode != 0:
            raise AssertionError(f"orchestrator topics create failed: {done.stderr}")
        run.tap.reconnect()
        commands = run.load.resend_all()
        results = run.tap.resend_all()
        run.log(f"re-sent {commands} command(s) and {results} capability result(s)")

    def check(self, run: Run, problems: list[str], db: dict[str, Any]) -> None:
        run.notes["timed_out_by_type"] = dict(db["timed_out_by_type"])
        failed = run.s.rows(
            "SELECT status, count(*), min(last_error) FROM event_outbox WHERE status <> 'SENT'"
            " GROUP BY status"
        )
        if failed:
            run.notes["outbox_not_sent"] = [list(map(str, r)) for r in failed]
        # Nothing may have created a topic before the operator did: the broker would have made
        # it with its own partition count and scattered each key over partitions.
        scattered = {t: n for t, n in _partition_counts(run).items() if n != 1}
        if scattered:
            problems.append(f"topics not laid out by `topics create`: {scattered}")


def _partition_counts(run: Run) -> dict[str, int]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": run.s.bootstrap, "log_level": 2})
    found = admin.list_topics(timeout=10).topics
    return {t: len(found[t].partitions) for t in run.s.output_topics() if t in found}


def _db_epoch(run: Run) -> float:
    return float(run.s.scalar("SELECT extract(epoch FROM now())"))


# -- bad timing of input --------------------------------------------------------------------------


class DuplicateDelivery(Scenario):
    name = "duplicate_delivery"
    description = (
        "every input is delivered twice: each command and each capability result is produced a"
        " second time (same bytes, same id), at once or up to 2 s later"
    )
    continuous = True
    duplicate_commands = True
    duplicate_results = True
    tap_results = True

    def inject(self, run: Run) -> None:
        run.mode = "every input twice"
        run.mark_fault("second copies of every input, throughout")

    def check(self, run: Run, problems: list[str], db: dict[str, Any]) -> None:
        assert run.load is not None and run.tap is not None
        run.notes["second_copies"] = {
            "commands": run.load.copies - len(run.load.sent),
            "results": run.tap.copies,
        }


class OutOfOrderAndUnknownResults(Scenario):
    name = "out_of_order_and_unknown_results"
    description = (
        "world generations are answered by hand, half of them with the quality review's result"
        " before the generation's result (both at random times, possibly before the command is"
        " processed); one command in ten is followed by a result for a correlation nobody asked"
        " for (generation, review, consistency check)"
    )
    continuous = True
    scores = "8"
    simulator_args = ("--silent", "Worldbuilder.World.GenerationRequested")
    extra_settle_s = 10.0

    def __init__(self) -> None:
        self.unknown: dict[int, set[str]] = {}

    def overrides(self, run: Run) -> dict[str, str]:
        # A generation result that overtook its command finds no task; the task created later
        # for that command then times out.
        return {"ORCHESTRATOR_TASK_TIMEOUTS": '{"Worldbuilder": 5}'}

    def inject(self, run: Run) -> None:
        run.mode = "hand-made results"
        run.mark_fault("out-of-order and unknown results, throughout")

    def _unknown(self, run: Run) -> set[str]:
        return self.unknown.setdefault(id(run), set())

    def on_command(self, run: Run, sent: Sent) -> None:
        rng = run.rng
        if sent.command_type == "World.Request":
            review_first = rng.random() < 0.5
            gen = _result(
                sent.session_id,
                "Worldbuilder.World.Generated",
                sent.correlation_id,
                name="Tessaly",
                attempt=0,
                text="world draft",
            )
            review = _result(
                sent.session_id,
                "Review.Quality.Evaluated",
                sent.correlation_id,
                score=8.0,
                target_type="world",
            )
            order = [review, gen] if review_first else [gen]
            _later(run, rng.uniform(0, 1.0), order)
        if rng.random() < 0.1:
            corr = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            self._unknown(run).add(corr)
            kind = rng.choice(("generation", "review", "consistency"))
            if kind == "generation":
                body = _result(
                    sent.session_id,
                    "Character.Design.Generated",
                    corr,
                    name="Zed",
                    attempt=0,
                    text="stray",
                )
            elif kind == "review":
                body = _result(
                    sent.session_id,
                    "Review.Quality.Evaluated",
                    corr,
                    score=5.0,
                    target_type="character",
                )
            else:
                body = _result(
                    sent.session_id,
                    "Review.Consistency.Checked",
                    corr,
                    ok=True,
                    score=1.0,
                    issues=[],
                )
            _later(run, rng.uniform(0, 1.0), [body])

    def allowed_problem(self, run: Run, p: Problem) -> bool:
        # A result nobody asked for reaches an outcome without a request fact: expected.
        return p.code is Code.REQUESTED_FACT_MISSING and p.correlation_id in self._unknown(run)

    def check(self, run: Run, problems: list[str], db: dict[str, Any]) -> None:
        unknown = self._unknown(run)
        run.notes["unknown_correlations"] = len(unknown)
        projected = run.s.scalar(
            "SELECT count(DISTINCT correlation_id) FROM domain_events WHERE correlation_id ="
            " ANY(:c)",
            c=list(unknown),
        )
        if projected != len(unknown):
            problems.append(
                f"only {projected} of {len(unknown)} results for unknown correlations projected"
            )


def _result(session: str, result_type: str, corr: str, **data: Any) -> bytes:
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "ts": "2026-11-29T12:00:01Z",
            "type": result_type,
            "data": {"session_id": session, "correlation_id": corr, **data},
        }
    )


def _later(run: Run, delay: float, bodies: list[bytes]) -> None:
    def send() -> None:
        try:
            assert run.load is not None
            for body in bodies:
                session = orjson.loads(body)["data"]["session_id"]
                run.load.out.produce(run.s.capability_topic, body, session.encode())
                run.extra_inputs += 1
        except Exception as exc:  # reported by the run, not lost in a thread
            run.notes.setdefault("hand_made_errors", []).append(repr(exc))

    timer = threading.Timer(delay, send)
    timer.daemon = True
    timer.start()


class SilentCapability(ConsistencyUnanswered):
    name = "silent_capability"
    description = (
        "the consistency-check service never answers: every stage validation's task times out"
        " (3 s) and a TimedOut fact is emitted, once"
    )
    continuous = True

    def inject(self, run: Run) -> None:
        run.mode = "Review.Consistency silent"
        run.mark_fault("consistency checks unanswered, throughout")

    def check(self, run: Run, problems: list[str], db: dict[str, Any]) -> None:
        super().check(run, problems, db)
        late = run.s.rows(
            "SELECT max(extract(epoch FROM completed_at - deadline_at)) FROM async_tasks"
            " WHERE error LIKE 'timeout%'"
        )
        if late and late[0][0] is not None:
            run.notes["timeout_fired_late_by_max_s"] = round(float(late[0][0]), 2)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        KillIngester(),
        KillWorkerMidTask(),
        KillRelayMidBatch(),
        KillBeat(),
        TwoBeats(),
        RedisRestartDataLost(),
        PostgresRestart(),
        KafkaRestart(),
        DuplicateDelivery(),
        OutOfOrderAndUnknownResults(),
        SilentCapability(),
    )
}
