//! The durable store-and-forward queue: SQLite (through `rusqlite`, built from source with
//! the `bundled` feature) in WAL mode.
//!
//! Why SQLite: it is made for exactly this (an application file format that survives
//! `kill -9` and power loss, documented and tested for it), readable while the agent
//! runs (`sensorbox queue` opens the same file), and inspectable with the `sqlite3` shell
//! on a box. redb would do too, but gives no second reader process and no SQL for the
//! "oldest first, per route, up to 500" queries.
//!
//! Why `synchronous = FULL`: in WAL mode `NORMAL` survives a crashed process but may roll
//! back the last commits on power loss, and a reading accepted by the queue must never be
//! lost. The SD card is spared by batching instead: the agent commits every reading that
//! arrived in the same tick in one transaction (one fsync), and removes sent readings in
//! one transaction per answer.

use crate::reading::QueuedReading;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use sensor_model::Sensor;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct QueueError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "queue {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for QueueError {}

/// One queued reading, as the sender sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: i64,
    pub route: Sensor,
    pub doc_id: String,
    pub created: DateTime<Utc>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub seq: i64,
    pub route: String,
    pub doc_id: String,
    pub status: u16,
    pub reason: String,
    pub moved_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub depth: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub dead_letters: u64,
    /// Readings dropped because the queue was full, since the queue was created.
    pub dropped: u64,
}

pub struct Queue {
    conn: Connection,
    path: PathBuf,
    max_readings: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS readings (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    route      TEXT    NOT NULL,
    doc_id     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (created_ms, seq);
CREATE INDEX IF NOT EXISTS readings_by_route ON readings (route, created_ms, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq       INTEGER PRIMARY KEY,
    route     TEXT    NOT NULL,
    doc_id    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    body      TEXT    NOT NULL,
    status    INTEGER NOT NULL,
    reason    TEXT    NOT NULL,
    moved_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS status (name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

impl Queue {
    /// Opens (or creates) the queue file. A corrupt, foreign or unwritable file is an
    /// error here, at start, never later in the send loop.
    pub fn open(path: &Path, max_readings: u64) -> Result<Queue, QueueError> {
        let fail = |message: String| QueueError {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(fail(format!(
                    "directory {} does not exist (create it, owned by the agent's user)",
                    dir.display()
                )));
            }
        }
        let conn = Connection::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let sqlite = |what: &str, e: rusqlite::Error| fail(format!("{what}: {e}"));
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| sqlite("not a usable SQLite file (corrupt or not a queue?)", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(format!("cannot switch to WAL mode (got {mode})")));
        }
        // cache_size: the queue is appended at the tail and read at the head, so SQLite's
        // default 2 MiB page cache buys nothing but RSS on a 15 MB budget; 256 KiB holds
        // both ends and the indexes.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA cache_size = -256;",
        )
        .map_err(|e| sqlite("cannot configure", e))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| sqlite("integrity check failed", e))?;
        if check != "ok" {
            return Err(fail(format!(
                "integrity check failed: {check}; move the file aside to start a new queue"
            )));
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| sqlite("cannot create the tables (read-only file or directory?)", e))?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
            max_readings,
        })
    }

    /// Opens an existing queue read-only (for `sensorbox queue` / `status` beside a
    /// running agent).
    pub fn open_read_only(path: &Path) -> Result<Queue, QueueError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
                QueueError {
                    path: path.to_path_buf(),
                    message: format!("cannot open: {e}"),
                }
            })?;
        Ok(Queue {
            conn,
            path: path.to_path_buf(),
            max_readings: u64::MAX,
        })
    }

    fn err(&self, what: &str, e: rusqlite::Error) -> QueueError {
        sql_error(&self.path, what, e)
    }

    /// Runs `work` in one transaction (one fsync at commit); nothing of it stays on error.
    fn in_transaction<T>(
        &mut self,
        what: &str,
        work: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, QueueError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sql_error(&path, "begin", e))?;
        let value = work(&tx).map_err(|e| sql_error(&path, what, e))?;
        tx.commit().map_err(|e| sql_error(&path, "commit", e))?;
        Ok(value)
    }

    /// One value from a query without parameters; `None` when there is no row.
    fn scalar<T: rusqlite::types::FromSql>(
        &self,
        what: &str,
        sql: &str,
    ) -> Result<Option<T>, QueueError> {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(what, e))
    }

    /// Stores readings durably in one transaction (one fsync). When the queue is over its
    /// bound afterwards, the oldest readings go first; returns how many were dropped.
    pub fn enqueue(&mut self, readings: &[QueuedReading]) -> Result<u64, QueueError> {
        if readings.is_empty() {
            return Ok(0);
        }
        let max = i64::try_from(self.max_readings).unwrap_or(i64::MAX);
        self.in_transaction("enqueue", |tx| {
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO readings (route, doc_id, created_ms, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for r in readings {
                    insert.execute(params![
                        r.route.name(),
                        r.doc_id,
                        r.created.timestamp_millis(),
                        r.body
                    ])?;
                }
            }
            let depth: i64 = tx.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))?;
            let over = depth.saturating_sub(max);
            if over > 0 {
                tx.execute(
                    "DELETE FROM readings WHERE seq IN
                       (SELECT seq FROM readings ORDER BY created_ms, seq LIMIT ?1)",
                    params![over],
                )?;
                tx.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?1)
                     ON CONFLICT(name) DO UPDATE SET value = value + ?1",
                    params![over],
                )?;
            }
            Ok(u64::try_from(over.max(0)).unwrap_or(0))
        })
    }

    /// The oldest reading's route and up to `max` readings of that route, oldest first.
    pub fn next_batch(&self, max: usize) -> Result<Vec<Entry>, QueueError> {
        let route: Option<String> = self.scalar(
            "peek",
            "SELECT route FROM readings ORDER BY created_ms, seq LIMIT 1",
        )?;
        let Some(route) = route else {
            return Ok(Vec::new());
        };
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT seq, route, doc_id, created_ms, body FROM readings
                 WHERE route = ?1 ORDER BY created_ms, seq LIMIT ?2",
            )
            .map_err(|e| self.err("prepare", e))?;
        let rows = select
            .query_map(params![route, max as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.err("select", e))?;
        let mut entries = Vec::new();
        for row in rows {
            let (seq, route, doc_id, created_ms, body) = row.map_err(|e| self.err("row", e))?;
            // A row this agent did not write (edited by hand): leave it for a person.
            let Some(route) = Sensor::parse(&route) else {
                continue;
            };
            entries.push(Entry {
                seq,
                route,
                doc_id,
                created: millis(created_ms),
                body,
            });
        }
        Ok(entries)
    }

    /// Removes sent readings (one transaction).
    pub fn remove(&mut self, seqs: &[i64]) -> Result<(), QueueError> {
        self.in_transaction("remove", |tx| {
            let mut delete = tx.prepare_cached("DELETE FROM readings WHERE seq = ?1")?;
            for seq in seqs {
                delete.execute(params![seq])?;
            }
            Ok(())
        })
    }

    /// Moves readings the API refused as a whole (400/413) to the dead-letter table: kept,
    /// never resent, listed by `sensorbox queue`.
    pub fn dead_letter(
        &mut self,
        seqs: &[i64],
        status: u16,
        reason: &str,
    ) -> Result<(), QueueError> {
        let now = Utc::now().timestamp_millis();
        self.in_transaction("dead-letter", |tx| {
            let mut copy = tx.prepare_cached(
                "INSERT OR REPLACE INTO dead_letters
                   (seq, route, doc_id, created_ms, body, status, reason, moved_ms)
                 SELECT seq, route, doc_id, created_ms, body, ?2, ?3, ?4 FROM readings WHERE seq = ?1",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM readings WHERE seq = ?1")?;
            for seq in seqs {
                copy.execute(params![seq, status, reason, now])?;
                delete.execute(params![seq])?;
            }
            Ok(())
        })
    }

    pub fn stats(&self) -> Result<QueueStats, QueueError> {
        let (depth, oldest): (i64, Option<i64>) = self
            .conn
            .query_row("SELECT COUNT(*), MIN(created_ms) FROM readings", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err("stats", e))?;
        let dead: Option<i64> = self.scalar("stats", "SELECT COUNT(*) FROM dead_letters")?;
        let dropped: Option<i64> =
            self.scalar("stats", "SELECT value FROM counters WHERE name = 'dropped'")?;
        Ok(QueueStats {
            depth: depth.max(0) as u64,
            oldest: oldest.map(millis),
            dead_letters: dead.unwrap_or(0).max(0) as u64,
            dropped: dropped.unwrap_or(0).max(0) as u64,
        })
    }

    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut select = self
            .conn
            .prepare(
                "SELECT seq, route, doc_id, status, reason, moved_ms FROM dead_letters
                 ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(|e| self.err("prepare", e))?;
        let rows = select
            .query_map(params![limit as i64], |r| {
                Ok(DeadLetter {
                    seq: r.get(0)?,
                    route: r.get(1)?,
                    doc_id: r.get(2)?,
                    status: r.get::<_, u16>(3)?,
                    reason: r.get(4)?,
                    moved_at: millis(r.get(5)?),
                })
            })
            .map_err(|e| self.err("select", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("row", e))
    }

    /// Small facts for `sensorbox status` (last send, last warning, MQTT state).
    pub fn set_status(&mut self, name: &str, value: &str) -> Result<(), QueueError> {
        self.conn
            .execute(
                "INSERT INTO status (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = ?2",
                params![name, value],
            )
            .map(|_| ())
            .map_err(|e| self.err("status", e))
    }

    pub fn status(&self) -> Result<Vec<(String, String)>, QueueError> {
        let mut select = self
            .conn
            .prepare("SELECT name, value FROM status ORDER BY name")
            .map_err(|e| self.err("prepare", e))?;
        let rows = select
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err("select", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("row", e))
    }
}

fn sql_error(path: &Path, what: &str, e: rusqlite::Error) -> QueueError {
    QueueError {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(route: Sensor, second: i64) -> QueuedReading {
        let created = Utc
            .timestamp_opt(1_800_000_000 + second, 0)
            .single()
            .expect("time");
        QueuedReading {
            route,
            doc_id: format!("{}-{second}", route.name()),
            created,
            body: format!("{{\"n\":{second}}}"),
        }
    }

    fn temp_queue(max: u64) -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(&dir.path().join("q.db"), max).expect("open");
        (dir, queue)
    }

    #[test]
    fn drains_the_oldest_route_first_in_time_order() {
        let (_dir, mut q) = temp_queue(100);
        q.enqueue(&[
            reading(Sensor::Dust, 5),
            reading(Sensor::Gasdetector, 3),
            reading(Sensor::Gasdetector, 1),
            reading(Sensor::Dust, 2),
        ])
        .expect("enqueue");
        let batch = q.next_batch(500).expect("batch");
        let ids: Vec<&str> = batch.iter().map(|e| e.doc_id.as_str()).collect();
        assert_eq!(ids, ["gasdetector-1", "gasdetector-3"]);
        q.remove(&batch.iter().map(|e| e.seq).collect::<Vec<_>>())
            .expect("remove");
        let ids: Vec<String> = q
            .next_batch(1)
            .expect("batch")
            .into_iter()
            .map(|e| e.doc_id)
            .collect();
        assert_eq!(ids, ["dust-2"]);
        assert_eq!(q.stats().expect("stats").depth, 2);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let (_dir, mut q) = temp_queue(3);
        let dropped = q
            .enqueue(&(0..5).map(|i| reading(Sensor::Temp, i)).collect::<Vec<_>>())
            .expect("enqueue");
        assert_eq!(dropped, 2);
        let stats = q.stats().expect("stats");
        assert_eq!((stats.depth, stats.dropped), (3, 2));
        assert_eq!(
            stats.oldest,
            Some(Utc.timestamp_opt(1_800_000_002, 0).single().expect("t"))
        );
        q.enqueue(&[reading(Sensor::Temp, 9)]).expect("enqueue");
        assert_eq!(q.stats().expect("stats").dropped, 3);
    }

    #[test]
    fn dead_letters_are_kept_and_never_resent() {
        let (_dir, mut q) = temp_queue(10);
        q.enqueue(&[reading(Sensor::Temp, 1), reading(Sensor::Temp, 2)])
            .expect("enqueue");
        let first = q.next_batch(1).expect("batch")[0].seq;
        q.dead_letter(&[first], 400, "temperature.value: not a number")
            .expect("dead letter");
        let left = q.next_batch(10).expect("batch");
        assert_eq!(left.len(), 1);
        assert_ne!(left[0].seq, first);
        let dead = q.dead_letters(10).expect("list");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].status, 400);
        assert_eq!(dead[0].doc_id, "temp-1");
        assert_eq!(q.stats().expect("stats").dead_letters, 1);
    }

    #[test]
    fn readings_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.db");
        {
            let mut q = Queue::open(&path, 10).expect("open");
            q.enqueue(&[reading(Sensor::Dust, 1)]).expect("enqueue");
            q.set_status("last_send", "never").expect("status");
        }
        let q = Queue::open(&path, 10).expect("reopen");
        assert_eq!(q.next_batch(10).expect("batch")[0].doc_id, "dust-1");
        assert_eq!(
            q.status().expect("status"),
            vec![("last_send".to_string(), "never".to_string())]
        );
        let read_only = Queue::open_read_only(&path).expect("read only");
        assert_eq!(read_only.stats().expect("stats").depth, 1);
    }

    #[test]
    fn a_corrupt_or_misplaced_file_is_a_clear_error_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.db");
        std::fs::write(
            &path,
            b"this is not a database, it is a text file with words in it",
        )
        .expect("write");
        let err = Queue::open(&path, 10).err().expect("refused");
        assert!(err.message.contains("not a usable SQLite file"), "{err}");
        let err = Queue::open(&dir.path().join("missing/q.db"), 10)
            .err()
            .expect("refused");
        assert!(err.message.contains("does not exist"), "{err}");
    }
}
