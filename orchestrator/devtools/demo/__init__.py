"""`orchestrator demo`: the whole pipeline on one machine, in one command, told as a story.

What it does, in order:

1. **Services.** Unless `--embedded` is given, it probes the configured services (the usual
   `DATABASE_URL`, `REDIS_URL`, `KAFKA_BOOTSTRAP_SERVERS` and Kafka client settings, or their
   defaults): PostgreSQL must accept a connection, Redis must answer PING and Kafka must return
   its metadata. When all three answer it uses them; otherwise it starts embedded real servers
   from pip wheels (`orchestrator.devtools.embedded.EmbeddedStack`: Tansu, PostgreSQL, Redis)
   and says why.
2. **Set-up.** `orchestrator db upgrade` and `orchestrator topics create`, run as an operator
   would run them (in parallel).
3. **Processes.** `orchestrator ingest`, one Celery worker on the three queues, Celery beat
   (the relay tick and the other periodic jobs) and `orchestrator simulate` (the capability
   services), each through its real command line.
4. **Sessions.** Each session sends `Character.Request`, `Theme.Request` and `Stage.Validate`.
   The simulator reviews every generation with `--scores` in turn (default 6 then 8: one
   regeneration, then a confirmation).
5. **Story.** Every message on the domain topic, the task topics, the capability topic and the
   dead-letter topic is shown as it appears: time since the commands were submitted, session,
   kind (command, fact, task, result, dead letter) and full name. On a terminal this is a rich
   live view; otherwise one plain line per event. The run ends when every session reached a
   final state (Confirmed or Failed) for everything it asked for, with a summary.
6. **Clean-up.** Every process it started is stopped (SIGTERM to its process group, SIGKILL
   after a deadline), the embedded servers too, also on Ctrl-C (exit 130), SIGTERM (exit 143)
   and on any error. Children also get a parent-death signal, so even a demo killed with
   SIGKILL leaves nothing running.

Isolation when the configured services are used
    The demo must neither disturb a deployment on the same services nor be disturbed by it.

    * Kafka: its own topics (`genesis.domain.events.demo-<id>` ..., task topics prefixed
      `demo-<id>.`), consumer groups and a reader that joins no group; the topics are deleted at
      the end.
    * Redis: Celery's queue names are fixed, so a deployment's worker on the same Redis database
      could take the demo's tasks. The demo therefore borrows a whole **empty** database: the
      one in `REDIS_URL` when it is empty, else the highest-numbered empty one (15 down to 0),
      claimed with a lock in database 0 (`orchestrator.devtools.redis_claim`: a redis-py
      `Lock` with a token and a TTL, extended while the demo runs); at the end it deletes every
      key in that database if the claim is still its own. With no empty database it falls back
      to the embedded services.
    * PostgreSQL: `DATABASE_URL` is used as is (the migrations are idempotent); the demo's rows
      stay there, under its own session ids. The demo's beat never re-drives inbox rows, times
      out tasks or prunes (those jobs are scheduled far in the future), so it never processes a
      deployment's rows with the demo's topics; its relay may publish a deployment's pending
      outbox rows, to the topics recorded in those rows, exactly as the deployment would.

The modules: `options`, `errors`, `signals`; `probes` and `services` (configured or
embedded); `topics`, `children` (command lines and environment) and `kafka_io`; `sessions`,
`story` and the `views`; `run` ties them together. Processes are started and stopped by
`orchestrator.devtools.supervisor`.

Child processes get an environment built from scratch: PATH, HOME, TMPDIR (when set), the service
URLs and the orchestrator settings; their output goes to log files in the work directory
(`--workdir`, else a new `orchestrator-demo-*` temporary directory), which is kept and named in
the summary; the last lines of each log are shown when the demo fails.
"""

from __future__ import annotations

from orchestrator.devtools.demo.errors import DemoError, DemoInterrupted
from orchestrator.devtools.demo.options import DemoOptions, parse_scores
from orchestrator.devtools.demo.run import Demo, run_demo
from orchestrator.devtools.demo.sessions import SessionPlan, make_plans
from orchestrator.devtools.demo.story import Event, Story
from orchestrator.devtools.demo.topics import DemoTopics
from orchestrator.devtools.demo.views import PlainView, View, make_view, plain_event_line

__all__ = [
    "Demo",
    "DemoError",
    "DemoInterrupted",
    "DemoOptions",
    "DemoTopics",
    "Event",
    "PlainView",
    "SessionPlan",
    "Story",
    "View",
    "make_plans",
    "make_view",
    "parse_scores",
    "plain_event_line",
    "run_demo",
]
