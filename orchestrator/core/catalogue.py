"""The capability catalogue: every kind of work the capability services do, in one place.

Command strategies, result handlers, the topic list, the simulator, the invariant checker and
the demo all read these rows, so adding a generation kind is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPE_TYPE = "GENESIS"
SCOPE_PREFIX = "Genesis"


@dataclass(frozen=True, slots=True)
class GenerationKind:
    """One kind of generated content: how it is asked for, answered and tracked."""

    target_type: str
    result_types: tuple[str, str]
    target: str
    task_prefix: str
    request_type: str
    topic_base: str
    prompt_adjust: str

    @property
    def result_type(self) -> str:
        """The canonical result type (the first); the second is the source's short alias."""
        return self.result_types[0]


GENERATION_KINDS: tuple[GenerationKind, ...] = (
    GenerationKind(
        "character",
        ("Character.Design.Generated", "Character.Generated"),
        "Character",
        "Character.Design.Generation",
        "Character.Design.GenerationRequested",
        "character",
        "structured",
    ),
    GenerationKind(
        "theme",
        ("Outliner.Theme.Generated", "Theme.Generated"),
        "Theme",
        "Outliner.Theme.Generation",
        "Outliner.Theme.GenerationRequested",
        "outline",
        "detailed",
    ),
    GenerationKind(
        "seed",
        ("Outliner.Concept.Generated", "Seed.Generated"),
        "Seed",
        "Outliner.Concept.Generation",
        "Outliner.Concept.GenerationRequested",
        "outline",
        "refined",
    ),
    GenerationKind(
        "world",
        ("Worldbuilder.World.Generated", "World.Generated"),
        "World",
        "Worldbuilder.World.Generation",
        "Worldbuilder.World.GenerationRequested",
        "world",
        "refined",
    ),
    GenerationKind(
        "plot",
        ("Plot.Structure.Generated", "Plot.Generated"),
        "Plot",
        "Plot.Structure.Generation",
        "Plot.Structure.GenerationRequested",
        "plot",
        "refined",
    ),
    GenerationKind(
        "details",
        ("Writer.Content.Generated", "Details.Generated"),
        "Details",
        "Writer.Content.Generation",
        "Writer.Content.GenerationRequested",
        "writer",
        "refined",
    ),
)
KIND_BY_RESULT = {t: k for k in GENERATION_KINDS for t in k.result_types}
KIND_BY_TARGET = {k.target_type: k for k in GENERATION_KINDS}

REVIEW_TOPIC_BASE = "review"
QUALITY_REVIEW_REQUEST = "Review.Quality.EvaluationRequested"
QUALITY_REVIEW_TYPES = frozenset({"Review.Quality.Evaluated", "Review.Quality.Result"})
CONSISTENCY_CHECK_REQUEST = "Review.Consistency.CheckRequested"
CONSISTENCY_TYPES = frozenset({"Review.Consistency.Checked", "Consistency.Checked"})

TASK_TOPIC_BASES: tuple[str, ...] = (
    *dict.fromkeys(k.topic_base for k in GENERATION_KINDS),
    REVIEW_TOPIC_BASE,
)
"""Every capability task topic's base, in catalogue order (`genesis.<base>.tasks`)."""

RESULT_TYPE_OF_REQUEST: dict[str, str] = {
    **{k.request_type: k.result_type for k in GENERATION_KINDS},
    QUALITY_REVIEW_REQUEST: "Review.Quality.Evaluated",
    CONSISTENCY_CHECK_REQUEST: "Review.Consistency.Checked",
}
"""The canonical answer to each capability request (what a capability service sends back)."""


def task_topic(scope_prefix: str, base: str) -> str:
    """`genesis.character.tasks` for scope `Genesis` and base `character`."""
    return f"{scope_prefix.lower()}.{base}.tasks"


def task_topics(prefix: str = "", scope_prefix: str = SCOPE_PREFIX) -> list[str]:
    """Every capability task topic, each behind `prefix` (ORCHESTRATOR_TASK_TOPIC_PREFIX)."""
    return [f"{prefix}{task_topic(scope_prefix, base)}" for base in TASK_TOPIC_BASES]
