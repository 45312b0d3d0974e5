"""The public surface: a sorted, pinned ``__all__`` that all resolves."""

from __future__ import annotations

import rdebug_nb as rd

PUBLIC = {
    "Bus",
    "CommandTimeout",
    "ConnectionFailed",
    "DELIVERY_COLUMNS",
    "EmbeddedServer",
    "GUILD_COLUMNS",
    "GuildNotFound",
    "IdParts",
    "InvalidId",
    "LoadIncomplete",
    "LoadReport",
    "MESSAGE_COLUMNS",
    "MalformedMessage",
    "MessageNotFound",
    "PermissionDenied",
    "RdebugError",
    "RdebugWarning",
    "Skip",
    "SkippedEntriesWarning",
    "SnapshotError",
    "StoredMessage",
    "TOPIC_COLUMNS",
    "TruncatedWarning",
    "WriteRefused",
    "connect",
    "decode_id",
    "decode_ids",
    "encode_id",
    "open_bus",
    "redact_url",
    "skips",
    "summarize",
    "to_messages",
    "try_decode_id",
}


def isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022)."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_pinned_and_sorted() -> None:
    assert set(rd.__all__) == PUBLIC
    assert rd.__all__ == sorted(rd.__all__, key=isort_order)
    assert len(rd.__all__) == len(set(rd.__all__))


def test_every_public_name_resolves() -> None:
    missing = [name for name in rd.__all__ if not hasattr(rd, name)]

    assert missing == []


def test_exceptions_share_one_root() -> None:
    errors = [getattr(rd, n) for n in rd.__all__ if isinstance(getattr(rd, n), type)]
    exceptions = [e for e in errors if issubclass(e, BaseException)]

    assert all(
        issubclass(e, rd.RdebugError) or issubclass(e, rd.RdebugWarning)
        for e in exceptions
    )
