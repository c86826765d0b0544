"""On-disk annotation queue: durable, safe for several processes at once.

`AnnotationQueue` is the synchronous storage layer (one SQLite file); `QueueAdapter` is the async
`FeedbackAdapter` over it. The console, callback and webhook adapters keep their state in an
`AnnotationQueue` too, so they inherit its guarantees.

Why SQLite in WAL mode with transactions:

- **Nothing acknowledged is lost.** `submit` and `receive` return only after their transaction has
  committed; with ``synchronous=FULL`` the commit is on disk before the call returns. A kill
  (SIGKILL, crash, power loss) at any point either happens before the commit (the call never
  returned, the caller retries: submits are upserts and answers carry an idempotency key, so the
  retry is harmless) or after it (the row is there on reopen).
- **Never half-written.** A transaction is atomic: a batch of escalations, or an answer together
  with its escalation's status change, is either fully in the file or not at all. In WAL mode a
  torn write leaves frames without a valid commit record in the ``-wal`` file, which SQLite ignores
  on the next open (checksummed frames), so the database is never corrupt.
- **Two processes at once.** SQLite's file locks serialise writers across processes;
  ``BEGIN IMMEDIATE`` takes the write lock at the start of each write transaction (no
  read-then-upgrade deadlock) and ``busy_timeout`` makes a second writer wait instead of failing.
  WAL lets readers (``steerkit review --list`` while a server writes) run without blocking the
  writer. This needs a local filesystem: SQLite locking is unreliable on network filesystems.
- No server to run, in the standard library, one file to back up.

Open a queue *after* forking; a connection must not cross a ``fork``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from steerkit.errors import FeedbackError
from steerkit.escalation import Answer, Escalation, EscalationStatus, SubmitResult, validate_answer

__all__ = ["AnnotationQueue", "QueueAdapter", "QueueEntry", "QueueCounts"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    id            TEXT PRIMARY KEY,
    persona_id    TEXT NOT NULL,
    pool_hash     TEXT NOT NULL,
    question_id   TEXT NOT NULL,
    version       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'answered', 'applied')),
    score         REAL NOT NULL,
    content_hash  TEXT NOT NULL,
    payload       TEXT NOT NULL,
    submit_count  INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    delivered_hash TEXT
);
CREATE INDEX IF NOT EXISTS escalations_persona_status ON escalations (persona_id, status);
CREATE TABLE IF NOT EXISTS answers (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    answer_id       TEXT NOT NULL UNIQUE,
    escalation_id   TEXT NOT NULL REFERENCES escalations (id),
    option          TEXT NOT NULL,
    version         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    acknowledged_at TEXT
);
CREATE INDEX IF NOT EXISTS answers_escalation ON answers (escalation_id, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class QueueEntry:
    """An escalation with its queue state."""

    escalation: Escalation
    status: EscalationStatus
    created_at: str
    updated_at: str
    submit_count: int
    answer: Answer | None
    """The latest answer received, if any (acknowledged or not)."""


@dataclass(frozen=True)
class QueueCounts:
    pending: int = 0
    answered: int = 0
    applied: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.answered + self.applied


class AnnotationQueue:
    """A durable annotation queue in one SQLite file (``":memory:"`` for a private in-memory one).

    Thread-safe (one connection behind a lock); several processes may open the same file.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = str(path)
        self.memory = self.path == ":memory:"
        if not self.memory:
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._lock = threading.RLock()
        self._busy_ms = int(busy_timeout_s * 1000)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            if not self.memory:
                self._set_wal()
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            with self._write() as c:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    c.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise FeedbackError(
                        f"annotation queue {self.path} has schema version {row[0]}, newer than this steerkit "
                        f"({SCHEMA_VERSION})",
                        hint="upgrade steerkit or use another queue file",
                    )
        except sqlite3.DatabaseError as e:
            raise FeedbackError(
                f"cannot open annotation queue {self.path}: {e}",
                hint="check the path is a writable local file created by steerkit",
            ) from e

    def _set_wal(self) -> None:
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise FeedbackError(
                        f"annotation queue {self.path}: the filesystem does not support WAL mode (got {mode})",
                        hint="put the queue on a local filesystem",
                    )
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            else:
                c.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            c = self._conn
            c.execute("BEGIN")
            try:
                yield c
            finally:
                c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AnnotationQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- escalations ---------------------------------------------------------------------------

    def submit(self, escalations: Sequence[Escalation]) -> SubmitResult:
        """Upsert escalations by id in one transaction. An escalation that already has an answer
        keeps it (and its status); identical content is left untouched."""
        res = SubmitResult()
        now = _now()
        with self._write() as c:
            for e in escalations:
                h = e.content_hash()
                row = c.execute("SELECT content_hash FROM escalations WHERE id = ?", (e.id,)).fetchone()
                if row is None:
                    c.execute(
                        "INSERT INTO escalations (id, persona_id, pool_hash, question_id, version, status, score, "
                        "content_hash, payload, created_at, updated_at) VALUES (?,?,?,?,?,'pending',?,?,?,?,?)",
                        (e.id, e.persona_id, e.pool_hash, e.question_id, e.version, e.score, h, e.model_dump_json(), now, now),
                    )
                    res.created.append(e.id)
                elif row[0] == h:
                    c.execute("UPDATE escalations SET submit_count = submit_count + 1 WHERE id = ?", (e.id,))
                    res.unchanged.append(e.id)
                else:
                    c.execute(
                        "UPDATE escalations SET persona_id=?, pool_hash=?, question_id=?, version=?, score=?, "
                        "content_hash=?, payload=?, updated_at=?, submit_count = submit_count + 1 WHERE id = ?",
                        (e.persona_id, e.pool_hash, e.question_id, e.version, e.score, h, e.model_dump_json(), now, e.id),
                    )
                    res.updated.append(e.id)
        return res

    def get(self, escalation_id: str) -> Escalation | None:
        with self._read() as c:
            row = c.execute("SELECT payload FROM escalations WHERE id = ?", (escalation_id,)).fetchone()
        return Escalation.model_validate_json(row[0]) if row else None

    def escalations(
        self, *, persona_id: str | None = None, status: EscalationStatus | None = None
    ) -> list[Escalation]:
        return [e.escalation for e in self.entries(persona_id=persona_id, status=status)]

    def entries(
        self,
        *,
        persona_id: str | None = None,
        status: EscalationStatus | None = None,
        limit: int | None = None,
    ) -> list[QueueEntry]:
        """Escalations with their state, least confident (lowest score) first."""
        sql = (
            "SELECT e.payload, e.status, e.created_at, e.updated_at, e.submit_count, "
            "(SELECT a.payload FROM answers a WHERE a.escalation_id = e.id ORDER BY a.seq DESC LIMIT 1) "
            "FROM escalations e WHERE 1=1"
        )
        args: list[object] = []
        if persona_id is not None:
            sql += " AND e.persona_id = ?"
            args.append(persona_id)
        if status is not None:
            sql += " AND e.status = ?"
            args.append(status)
        sql += " ORDER BY e.score ASC, e.created_at ASC, e.id ASC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._read() as c:
            rows = c.execute(sql, args).fetchall()
        return [
            QueueEntry(
                escalation=Escalation.model_validate_json(p),
                status=s,
                created_at=ca,
                updated_at=ua,
                submit_count=n,
                answer=Answer.model_validate_json(a) if a else None,
            )
            for p, s, ca, ua, n, a in rows
        ]

    def counts(self, *, persona_id: str | None = None) -> QueueCounts:
        sql = "SELECT status, COUNT(*) FROM escalations"
        args: tuple[object, ...] = ()
        if persona_id is not None:
            sql += " WHERE persona_id = ?"
            args = (persona_id,)
        with self._read() as c:
            rows = dict(c.execute(sql + " GROUP BY status", args).fetchall())
        return QueueCounts(pending=rows.get("pending", 0), answered=rows.get("answered", 0), applied=rows.get("applied", 0))

    # --- answers -------------------------------------------------------------------------------

    def receive(self, answer: Answer, *, adapter: str | None = None) -> bool:
        """Validate and record an answer. True if new; False for a duplicate (same ``answer_id``).

        Raises `InvalidAnswerError` (unknown escalation, option not in the question, stale version)
        and then nothing has changed.
        """
        return self.receive_many([answer], adapter=adapter)[0]

    def receive_many(self, answers: Sequence[Answer], *, adapter: str | None = None) -> list[bool]:
        """`receive` for a batch in one transaction: all recorded, or (on the first invalid answer)
        none. Returns per answer whether it was new."""
        out: list[bool] = []
        with self._write() as c:
            for answer in answers:
                if adapter is not None and answer.adapter is None:
                    answer = answer.model_copy(update={"adapter": adapter})
                if c.execute("SELECT 1 FROM answers WHERE answer_id = ?", (answer.answer_id,)).fetchone():
                    out.append(False)
                    continue
                row = c.execute("SELECT payload FROM escalations WHERE id = ?", (answer.escalation_id,)).fetchone()
                esc = Escalation.model_validate_json(row[0]) if row else None
                validate_answer(answer, esc)
                now = _now()
                c.execute(
                    "INSERT INTO answers (answer_id, escalation_id, option, version, payload, received_at) "
                    "VALUES (?,?,?,?,?,?)",
                    (answer.answer_id, answer.escalation_id, answer.option, answer.version, answer.model_dump_json(), now),
                )
                c.execute("UPDATE escalations SET status = 'answered', updated_at = ? WHERE id = ?", (now, answer.escalation_id))
                out.append(True)
        return out

    def answers(
        self, *, persona_id: str | None = None, include_acknowledged: bool = False
    ) -> list[Answer]:
        """The latest answer of each escalation that has one (unacknowledged only by default)."""
        sql = (
            "SELECT a.payload FROM answers a JOIN escalations e ON e.id = a.escalation_id "
            "WHERE a.seq = (SELECT MAX(b.seq) FROM answers b WHERE b.escalation_id = a.escalation_id)"
        )
        args: list[object] = []
        if not include_acknowledged:
            sql += " AND a.acknowledged_at IS NULL"
        if persona_id is not None:
            sql += " AND e.persona_id = ?"
            args.append(persona_id)
        sql += " ORDER BY a.seq"
        with self._read() as c:
            rows = c.execute(sql, args).fetchall()
        return [Answer.model_validate_json(r[0]) for r in rows]

    def history(self, escalation_id: str) -> list[Answer]:
        """Every answer received for an escalation, oldest first."""
        with self._read() as c:
            rows = c.execute(
                "SELECT payload FROM answers WHERE escalation_id = ? ORDER BY seq", (escalation_id,)
            ).fetchall()
        return [Answer.model_validate_json(r[0]) for r in rows]

    def acknowledge(self, answer_ids: Sequence[str]) -> int:
        """Mark answers (and any earlier answers of the same escalations) as applied. Unknown ids
        are ignored (acknowledging twice is harmless). Returns how many answers changed."""
        now = _now()
        changed = 0
        with self._write() as c:
            for aid in answer_ids:
                row = c.execute("SELECT escalation_id, seq FROM answers WHERE answer_id = ?", (aid,)).fetchone()
                if row is None:
                    continue
                eid, seq = row
                cur = c.execute(
                    "UPDATE answers SET acknowledged_at = ? WHERE escalation_id = ? AND seq <= ? "
                    "AND acknowledged_at IS NULL",
                    (now, eid, seq),
                )
                changed += cur.rowcount
                latest = c.execute("SELECT MAX(seq) FROM answers WHERE escalation_id = ?", (eid,)).fetchone()[0]
                if latest == seq:
                    c.execute("UPDATE escalations SET status = 'applied', updated_at = ? WHERE id = ?", (now, eid))
        return changed

    # --- delivery bookkeeping (for adapters that forward escalations elsewhere) ------------------

    def undelivered(self) -> list[Escalation]:
        """Escalations whose current content has not been marked delivered."""
        with self._read() as c:
            rows = c.execute(
                "SELECT payload FROM escalations WHERE delivered_hash IS NULL OR delivered_hash != content_hash "
                "ORDER BY score, created_at, id"
            ).fetchall()
        return [Escalation.model_validate_json(r[0]) for r in rows]

    def mark_delivered(self, escalations: Sequence[Escalation]) -> None:
        with self._write() as c:
            for e in escalations:
                c.execute("UPDATE escalations SET delivered_hash = ? WHERE id = ?", (e.content_hash(), e.id))

    def get_meta(self, key: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when the file is sound)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def __repr__(self) -> str:
        return f"AnnotationQueue({self.path!r})"


AnswerListener = Callable[[Answer], Awaitable[None]]


class QueueAdapter:
    """The async `FeedbackAdapter` over an `AnnotationQueue` (a path, or a queue object).

    ``on_answer`` listeners are awaited after each *new* answer is durably recorded (pushed answers).
    """

    name = "queue"

    def __init__(self, queue: AnnotationQueue | str | Path, *, name: str | None = None) -> None:
        self.queue = queue if isinstance(queue, AnnotationQueue) else AnnotationQueue(queue)
        self._owns_queue = not isinstance(queue, AnnotationQueue)
        if name is not None:
            self.name = name
        self.on_answer: list[AnswerListener] = []

    async def submit(self, escalations: Sequence[Escalation]) -> SubmitResult:
        return await asyncio.to_thread(self.queue.submit, list(escalations))

    async def receive(self, answer: Answer) -> bool:
        new = await asyncio.to_thread(self.queue.receive, answer, adapter=self.name)
        if new:
            stored = answer if answer.adapter is not None else answer.model_copy(update={"adapter": self.name})
            for fn in list(self.on_answer):
                await fn(stored)
        return new

    async def answers(self, *, persona_id: str | None = None) -> list[Answer]:
        return await asyncio.to_thread(self.queue.answers, persona_id=persona_id)

    async def acknowledge(self, answer_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.queue.acknowledge, list(answer_ids))

    async def escalations(
        self, *, persona_id: str | None = None, status: EscalationStatus | None = None
    ) -> list[Escalation]:
        return await asyncio.to_thread(self.queue.escalations, persona_id=persona_id, status=status)

    async def get(self, escalation_id: str) -> Escalation | None:
        return await asyncio.to_thread(self.queue.get, escalation_id)

    async def aclose(self) -> None:
        if self._owns_queue:
            self.queue.close()

    async def __aenter__(self) -> QueueAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.queue.path!r})"
