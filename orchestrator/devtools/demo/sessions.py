"""The sessions a demo run submits: who they are and the commands each one sends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

COMMAND_EVENT = "Genesis.Session.Command.Received"
_CHARACTERS = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Linus", "Margaret")
_THEMES = (
    "a lighthouse at the edge of the map",
    "letters that arrive one day early",
    "a city that forgets every night",
    "the last library on the moon",
)


@dataclass(frozen=True)
class SessionPlan:
    session_id: str
    character: str
    theme: str

    @property
    def short(self) -> str:
        return self.session_id[:8]

    def commands(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("Character.Request", {"name": self.character}),
            ("Theme.Request", {"name": self.theme}),
            ("Stage.Validate", {"stage": "characters"}),
        ]


def make_plans(count: int) -> list[SessionPlan]:
    """`count` sessions whose short ids (the first 8 characters, shown in the story) differ."""
    plans: list[SessionPlan] = []
    shorts: set[str] = set()
    while len(plans) < count:
        session_id = str(uuid.uuid4())
        if session_id[:8] in shorts:
            continue
        shorts.add(session_id[:8])
        index = len(plans)
        plans.append(
            SessionPlan(
                session_id,
                _CHARACTERS[index % len(_CHARACTERS)],
                _THEMES[index % len(_THEMES)],
            )
        )
    return plans


def command_envelope(
    session_id: str, command_type: str, payload: dict[str, Any], created_at: str
) -> dict[str, Any]:
    """The domain event a user's command arrives as."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": COMMAND_EVENT,
        "aggregate_type": "GenesisSession",
        "aggregate_id": session_id,
        "payload": {"command_type": command_type, "user_id": "demo-user", "payload": payload},
        "metadata": {"correlation_id": str(uuid.uuid4()), "causation_id": None},
        "created_at": created_at,
    }
