"""One demo run from start to end: services, set-up, processes, sessions, story, summary, and
the clean-up that stops everything it started whatever happened."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from orchestrator.devtools.demo.children import (
    LONG_RUNNING,
    SETUP,
    RunNames,
    child_env,
    commands,
)
from orchestrator.devtools.demo.errors import DemoError, DemoInterrupted
from orchestrator.devtools.demo.kafka_io import StoryClients
from orchestrator.devtools.demo.keep import (
    KeptDemo,
    export_lines,
    exports_of,
    proc_of,
    write_env_file,
    write_state,
)
from orchestrator.devtools.demo.options import DemoOptions, format_score
from orchestrator.devtools.demo.services import ServiceChooser, Services
from orchestrator.devtools.demo.sessions import make_plans
from orchestrator.devtools.demo.signals import SignalGuard, signal_name
from orchestrator.devtools.demo.story import KINDS, Story
from orchestrator.devtools.demo.topics import DemoTopics, delete_private
from orchestrator.devtools.demo.views import View, make_view
from orchestrator.devtools.supervisor import CommandFailed, Supervisor

# Stopping children: SIGTERM to each process group, SIGKILL to what is left after this long.
STOP_GRACE_S = 15.0
SETUP_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 20


class Demo:
    def __init__(self, options: DemoOptions, view: View, guard: SignalGuard | None = None) -> None:
        self.options = options
        self.view = view
        self.guard = guard
        self.run_id = uuid.uuid4().hex[:8]
        self.began = time.monotonic()
        self.chooser = ServiceChooser(self.run_id, view.info)
        self.workdir: Path | None = None
        self.services: Services | None = None
        self.names = RunNames(self.run_id, private=False)
        self.topics: DemoTopics | None = None
        self.supervisor: Supervisor | None = None
        self.clients: StoryClients | None = None
        self._cleanup_done = False
        self.cleanup_errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.env: dict[str, str] = {}
        self.session_ids: list[str] = []
        # Set once the story is told and the stack is kept: a signal then is the normal stop.
        self.keeping = False
        self.state_file: Path | None = None

    # -- phases ---------------------------------------------------------------------------

    def run(self) -> int:
        options = self.options
        self.view.info(
            f"orchestrator demo: {options.sessions} session(s) (Character.Request, "
            f"Theme.Request, Stage.Validate each), review scores "
            f"{','.join(format_score(s) for s in options.scores)}, timeout {options.timeout_s:g} s"
        )
        workdir = self.workdir = self._make_workdir()
        services = self.services = self.chooser.choose(options.embedded)
        self.names = RunNames(self.run_id, private=services.shared)
        topics = self.topics = (
            DemoTopics.private(self.run_id) if services.shared else DemoTopics.defaults()
        )
        env = self.env = child_env(services, topics, self.names, workdir)
        self.supervisor = Supervisor(workdir, env, workdir, append_logs=False, grace=STOP_GRACE_S)
        self._start(services, workdir)
        story = self._drive(services, topics)
        self._summarize(story)
        if not story.finished:
            raise DemoError(
                f"sessions did not finish within {options.timeout_s:g} s "
                f"({story.finished_count} of {len(story.sessions)} finished)",
                show_logs=True,
            )
        return 0

    def _make_workdir(self) -> Path:
        if self.options.workdir is not None:
            workdir = self.options.workdir.expanduser().resolve()
            workdir.mkdir(parents=True, exist_ok=True)
            return workdir
        return Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))

    def _start(self, services: Services, workdir: Path) -> None:
        """Set-up commands, then the long-running processes.

        The worker starts while the migrations and topics are created: it touches only Redis
        until the ingester hands it work, and its start-up is the slowest. Beat (whose relay
        tick reads the outbox), the simulator and the ingester (which read the topics) start
        once the set-up is done.
        """
        assert self.supervisor is not None
        self.view.info(services.description)
        argv = commands(self.names, self.options.scores, workdir)
        first, *rest = LONG_RUNNING
        began = time.monotonic()
        started = [self.supervisor.spawn(first, argv[first])]
        try:
            self.supervisor.run_all({name: argv[name] for name in SETUP}, SETUP_TIMEOUT_S)
        except CommandFailed as exc:
            raise DemoError(str(exc), show_logs=exc.timed_out) from exc
        self.timings["setup"] = time.monotonic() - began
        self.view.info(
            f"migrations applied and topics created in {self.timings['setup']:.2f} s "
            "(orchestrator db upgrade, orchestrator topics create)"
        )
        started += [self.supervisor.spawn(name, argv[name]) for name in rest]
        self.view.info(
            "started "
            + ", ".join(f"{c.name} (pid {c.pid})" for c in started)
            + f"; logs in {workdir}"
        )

    def _drive(self, services: Services, topics: DemoTopics) -> Story:
        """Submit the sessions and tell their story until all are final or time is up."""
        assert self.supervisor is not None
        clients = self.clients = StoryClients(services.kafka_conf, topics, self.run_id)
        plans = make_plans(self.options.sessions)
        self.session_ids = [p.session_id for p in plans]
        story = Story(plans, topics)
        clients.submit(plans)
        self.view.info(
            "submitted " + ", ".join(f"session {p.short} ({p.character})" for p in plans)
        )
        deadline = time.monotonic() + self.options.timeout_s
        self.view.start_story(story)
        try:
            while not story.finished and time.monotonic() < deadline:
                if self.guard is not None:
                    self.guard.check()
                dead = self.supervisor.exited()
                if dead is not None:
                    raise DemoError(
                        f"{dead.name} (pid {dead.pid}) exited with code "
                        f"{dead.returncode} before the sessions finished",
                        show_logs=True,
                    )
                for event in clients.read(story):
                    self.view.event(event, story)
        finally:
            self.view.stop_story()
        return story

    def _summarize(self, story: Story) -> None:
        counts = story.counts
        lines = ["events: " + ", ".join(f"{counts[kind]} {kind}s" for kind in KINDS)]
        finished = [s.finished_ms for s in story.sessions.values() if s.finished_ms is not None]
        parts = []
        if self.services is not None:
            kind, ready = self.services.kind, self.services.ready_s
            parts.append(f"{kind} services ready in {ready:.2f} s")
        if "setup" in self.timings:
            parts.append(f"set-up {self.timings['setup']:.2f} s")
        if finished:
            parts.append(f"sessions done {max(finished) / 1000:.2f} s after submission")
        parts.append(f"total {time.monotonic() - self.began:.2f} s so far")
        lines.append("timings: " + ", ".join(parts))
        lines.append(f"logs: {self.workdir}")
        self.view.summary(story, lines)

    def keep(self) -> None:
        """Leave everything running: say how to reach it, record it for `orchestrator down`,
        and wait for Ctrl-C or SIGTERM (DemoInterrupted); DemoError if a process dies."""
        assert self.supervisor is not None and self.workdir is not None
        if self.clients is not None:
            self.clients.close_reader()
            self.clients.drop_producer()
        exports = exports_of(self.env)
        env_file = write_env_file(self.workdir, exports)
        children = [(c.name, c.pid) for c in self.supervisor.running]
        stack = self.chooser.stack
        for server in stack.servers if stack is not None else []:
            children += [(server.kind, pid) for pid in server.pids]
        me = proc_of("demo", os.getpid())
        assert me is not None
        recorded = [p for p in (proc_of(n, pid) for n, pid in children) if p is not None]
        self.state_file = write_state(
            KeptDemo(me, str(self.workdir), exports, self.session_ids, recorded)
        )
        self.keeping = True
        from orchestrator.observability.logs import redact_text

        lines = export_lines(exports)
        shown = [redact_text(line) for line in lines]
        first = self.session_ids[0] if self.session_ids else "SESSION"
        info = self.view.info
        info("the stack is kept running; in another shell, set:")
        for line in shown:
            info(f"  {line}")
        masked = " (passwords masked here)" if shown != lines else ""
        info(f"  (or: . {env_file}){masked}")
        info("sessions: " + " ".join(self.session_ids))
        info(f"then try: orchestrator trace {first}")
        info(f"          orchestrator tasks --session {first}")
        payload = '\'{"name": "Ada"}\''
        info(f"          orchestrator send Character.Request --session {first} --payload {payload}")
        info("          orchestrator dead-letters list")
        info("stop it with Ctrl-C here, or `orchestrator down` from another shell")
        while True:
            if self.guard is not None:
                self.guard.check()
            dead = self.supervisor.exited()
            if dead is not None:
                raise DemoError(
                    f"{dead.name} (pid {dead.pid}) exited with code {dead.returncode}",
                    show_logs=True,
                )
            time.sleep(0.2)

    # -- clean-up ---------------------------------------------------------------------------

    def log_tails(self) -> list[str]:
        """The last lines of every process's log, for a failure report."""
        out: list[str] = []
        for child in self.supervisor.started if self.supervisor is not None else []:
            tail = child.tail(LOG_TAIL_LINES)
            out.append(
                f"---- {child.name} (pid {child.pid}): "
                + (f"last lines of {child.log}" if tail else "nothing logged yet")
            )
            if tail:
                out.append(tail)
        return out

    def cleanup(self) -> str | None:
        """Stop everything this demo started (idempotent); a line saying what was stopped.

        Every step runs even when an earlier one fails; failures go to `cleanup_errors`.
        """
        if self._cleanup_done:
            return None
        began = time.monotonic()
        clients = self.clients
        if clients is not None:
            self._attempt("close the Kafka reader", clients.close_reader)
            self._attempt("flush the Kafka producer", clients.drop_producer)
        stopped = 0
        if self.supervisor is not None:
            stopped = len(self.supervisor.running)
            self._attempt("stop the processes", self.supervisor.stop_all)
        if self.services is not None and self.services.shared and self.topics is not None:
            groups = [self.names.ingester_group, self.names.simulator_group]
            delete_private(self.services.kafka_conf, self.topics, groups)
        self._attempt("release the Redis database", self.chooser.release_redis)
        servers = self.chooser.server_count
        self._attempt("stop the embedded servers", self.chooser.stop_servers)
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        self._cleanup_done = True
        what = [f"{stopped} process(es)"]
        if servers:
            what.append(f"{servers} embedded server(s)")
        return f"stopped {' and '.join(what)} in {time.monotonic() - began:.2f} s"

    def _attempt(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:
            self.cleanup_errors.append(f"could not {what}: {exc}")


def run_demo(options: DemoOptions, view: View | None = None) -> int:
    """Run the demo; the process exit code (0 when every session reached its final states).

    Everything it starts is stopped before it returns, whatever happens.
    """
    view = view or make_view()
    guard = SignalGuard()
    guard.install()
    demo = Demo(options, view, guard)
    code = 1
    stopped: str | None = None
    try:
        try:
            code = demo.run()
            if code == 0 and options.keep:
                demo.keep()
        except DemoError as exc:
            code = exc.code
            view.error(f"orchestrator demo: {exc}")
            if exc.show_logs:
                for line in demo.log_tails():
                    view.error(line)
    except DemoInterrupted as exc:
        code = 0 if demo.keeping else 128 + exc.signum
        view.error(f"orchestrator demo: {signal_name(exc.signum)} received, stopping everything")
    finally:
        while True:
            try:
                guard.disarm()
                stopped = demo.cleanup()
                break
            except DemoInterrupted:  # at most once: the guard disarms itself when it raises
                continue
    try:
        if stopped:
            view.info(stopped)
        for problem in demo.cleanup_errors:
            view.error(f"orchestrator demo: {problem}")
            code = code or 1
    finally:
        guard.restore()
    if guard.received is not None and not demo.keeping:
        code = 128 + guard.received
    return code
