"""The study's answers in SQLite: one row per (rater, item), written once.

Every write is its own transaction, committed (journal in WAL mode, ``synchronous=FULL``: each commit reaches the
disk) before the app replies, so an answer the rater saw accepted survives a crash of the app or of the machine
(``durable=False``, for the simulated raters, commits with ``synchronous=NORMAL``: safe if the app crashes, not if the
machine loses power). The response time counts from when the app first showed the item to the rater (kept in memory:
after a restart it counts from the item's next showing). An answer is never overwritten: the same
answer again is accepted as a repeat (a double submit), another answer to an item the rater already answered is a
conflict. A rater id is claimed with a secret resume code (stored hashed); only its holder writes that rater's rows.
A database belongs to one study (its fingerprint is stored): opening it with another study is an error.
API: :class:`AnswerStore`, :func:`study_fingerprint`, :func:`read_answers`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    rater_id TEXT PRIMARY KEY, code_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    rater_id TEXT NOT NULL REFERENCES raters(rater_id), item_id TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    answered_at TEXT NOT NULL, response_ms INTEGER,
    PRIMARY KEY (rater_id, item_id));
"""

ANSWER_COLUMNS = ("rater_id", "item_id", "choice", "answered_at", "response_ms")


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def study_fingerprint(study: dict) -> str:
    """A digest of a study's items: a database answers exactly one study."""
    return hashlib.sha256(json.dumps(study["items"], sort_keys=True).encode()).hexdigest()[:16]


class AnswerStore:
    """The answers database at ``path`` (created if absent) of the study with fingerprint ``fingerprint``."""

    def __init__(self, path: str | Path, fingerprint: str, *, durable: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the server's threads one at a time
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)
        self._write("INSERT OR IGNORE INTO meta VALUES ('study', ?)", (fingerprint,))
        stored = self._read("SELECT value FROM meta WHERE key = 'study'")[0][0]
        if stored != fingerprint:
            self.close()
            raise ValueError(f"{self.path} holds the answers of another study (fingerprint {stored}, this study "
                             f"{fingerprint}): give this study its own database file")
        self._served: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self._conn.close()

    def _write(self, sql: str, args: tuple) -> int:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                n = self._conn.execute(sql, args).rowcount
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return n

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def claim(self, rater_id: str, code: str) -> bool:
        """Claim ``rater_id`` with the resume ``code``: True if it was free (now claimed) or is held with this code,
        False if another code holds it."""
        self._write("INSERT OR IGNORE INTO raters VALUES (?, ?, ?)", (rater_id, _hash(code), now()))
        return self.holds(rater_id, code)

    def holds(self, rater_id: str, code: str) -> bool:
        """Whether ``code`` is the resume code of ``rater_id``."""
        row = self._read("SELECT code_hash FROM raters WHERE rater_id = ?", (rater_id,))
        return bool(row) and hmac.compare_digest(row[0][0], _hash(code))

    def served(self, rater_id: str, item_id: str) -> None:
        """Note the first time ``item_id`` was shown to ``rater_id`` (the response time counts from it)."""
        self._served.setdefault((rater_id, item_id), now())

    def answer(self, rater_id: str, item_id: str, choice: str) -> tuple[str, str]:
        """Record an answer: ('created', choice), ('repeat', choice) for the same answer again, or ('conflict', the
        stored choice) for another answer to an answered item (nothing is overwritten)."""
        at = now()
        served = self._served.get((rater_id, item_id))
        ms = None
        if served:
            ms = int((datetime.fromisoformat(at) - datetime.fromisoformat(served)).total_seconds() * 1000)
        if self._write("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?)", (rater_id, item_id, choice, at, ms)):
            return "created", choice
        stored = self._read("SELECT choice FROM answers WHERE rater_id = ? AND item_id = ?", (rater_id, item_id))[0][0]
        return ("repeat" if stored == choice else "conflict"), stored

    def answered(self, rater_id: str) -> set[str]:
        """The item ids ``rater_id`` has answered."""
        return {r[0] for r in self._read("SELECT item_id FROM answers WHERE rater_id = ?", (rater_id,))}

    def answers(self) -> pd.DataFrame:
        """Every answer (:data:`ANSWER_COLUMNS`), in the order they were given."""
        rows = self._read(f"SELECT {', '.join(ANSWER_COLUMNS)} FROM answers ORDER BY answered_at, rater_id")
        return pd.DataFrame(rows, columns=list(ANSWER_COLUMNS))


def read_answers(path: str | Path, study: dict) -> pd.DataFrame:
    """The answers of the database at ``path`` for ``study`` (an error if the file is absent or of another study)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no answers database at {path}: collect answers with the study app "
                                "(`rocm-rlhf study-serve`) or set study.answers: simulated")
    store = AnswerStore(path, study_fingerprint(study))
    try:
        return store.answers()
    finally:
        store.close()
