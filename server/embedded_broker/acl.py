"""The fleet broker ACL as code, for brokers that cannot read a Mosquitto ``acl_file``.

The same rules as :func:`certs.acl_text` (the Mosquitto ACL), with the same meaning:

    every identity       writes fc/v1/d/%u/up/#   reads fc/v1/d/%u/down/#
    the server identity  also reads fc/v1/d/+/up/#   and writes fc/v1/d/+/down/#

*Reads* governs both subscribing (the requested filter must lie inside a read pattern: every
topic it can match is readable) and delivery (each message is checked again against the
receiver's read patterns, so a session that outlives a change of identity leaks nothing).
Anything not granted is denied. Shared subscriptions (``$share/<group>/<filter>``) are judged by
their inner filter, but only when the broker supports them; otherwise they are refused, so a
client learns at SUBACK time that it would receive nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from certs import SERVER_IDENTITY, InvalidIdentityError, validate_identity

__all__ = ["FleetAcl", "filter_covers", "topic_matches"]


def topic_matches(topic: str, pattern: str) -> bool:
    """True if the concrete ``topic`` matches the MQTT filter ``pattern``."""
    if topic.startswith("$") and pattern[:1] in {"+", "#"}:
        return False
    t_levels, p_levels = topic.split("/"), pattern.split("/")
    for i, level in enumerate(p_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or level not in {"+", t_levels[i]}:
            return False
    return len(t_levels) == len(p_levels)


def filter_covers(pattern: str, requested: str) -> bool:
    """True if every topic the filter ``requested`` can match is also matched by ``pattern``."""
    p_levels, r_levels = pattern.split("/"), requested.split("/")
    for i, level in enumerate(p_levels):
        if level == "#":
            return True
        if i >= len(r_levels):
            return False
        wanted = r_levels[i]
        if level == "+":
            if wanted == "#":
                return False
            continue
        if wanted != level:  # a literal level admits only the same literal, never a wildcard
            return False
    return len(r_levels) == len(p_levels)


@dataclass(frozen=True, slots=True)
class FleetAcl:
    """``may_publish`` / ``may_subscribe`` / ``may_receive`` for an authenticated identity."""

    server_identity: str = SERVER_IDENTITY
    shared_subscriptions: bool = False

    def _patterns(self, identity: str, *, read: bool) -> tuple[str, ...]:
        try:
            validate_identity(identity, what="identity")
        except InvalidIdentityError:
            return ()  # an identity that cannot be substituted into %u gets nothing
        own = f"fc/v1/d/{identity}/down/#" if read else f"fc/v1/d/{identity}/up/#"
        if identity == self.server_identity:
            return (own, "fc/v1/d/+/up/#" if read else "fc/v1/d/+/down/#")
        return (own,)

    def may_publish(self, identity: str, topic: str) -> bool:
        if not topic or "+" in topic or "#" in topic:
            return False
        return any(topic_matches(topic, p) for p in self._patterns(identity, read=False))

    def may_receive(self, identity: str, topic: str) -> bool:
        return any(topic_matches(topic, p) for p in self._patterns(identity, read=True))

    def may_subscribe(self, identity: str, topic_filter: str) -> bool:
        if topic_filter.startswith("$share/"):
            parts = topic_filter.split("/", 2)
            if not self.shared_subscriptions or len(parts) < 3 or not parts[1]:
                return False
            topic_filter = parts[2]
        if not _valid_filter(topic_filter):
            return False
        return any(filter_covers(p, topic_filter) for p in self._patterns(identity, read=True))


def _valid_filter(topic_filter: str) -> bool:
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True
