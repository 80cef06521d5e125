//! Write-ahead log: the short-term durable buffer in front of the Iceberg table.
//!
//! One writer thread owns the open segment. Appends queue up while it syncs; it then writes
//! every queued frame and calls `fdatasync` once for all of them (group commit) and only then
//! answers each caller, so an acknowledged batch is on disk. Frames are
//! `[len u32 LE][crc32 u32 LE][payload]`; a torn tail left by a crash fails its length or CRC
//! check and is cut off at replay. Segments are sealed by [`Wal::rotate`] and deleted only
//! after their facts are committed to Iceberg.
//!
//! A payload is one batch in a compact binary form ([`encode`]); JSON payloads (a `[` first
//! byte), written by earlier versions, are still read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::model::{Interner, RequestFact};

/// Largest frame accepted at replay; anything bigger is corruption.
const MAX_FRAME: usize = 256 << 20;

enum Command {
    Append { payload: Vec<u8>, done: oneshot::Sender<io::Result<u64>> },
    Rotate { done: oneshot::Sender<io::Result<u64>> },
}

/// Handle to the log; cheap to share behind an `Arc`.
pub struct Wal {
    tx: mpsc::Sender<Command>,
    dir: PathBuf,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// A sealed or replayed segment with its facts.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub facts: Vec<RequestFact>,
}

impl Wal {
    /// Opens the log in `dir`: replays every existing segment (cutting torn tails), and starts
    /// a fresh segment after them, so replayed segments are sealed.
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<Segment>)> {
        fs::create_dir_all(dir)?;
        let mut replayed = Vec::new();
        for (seq, path) in list_segments(dir)? {
            replayed.push(Segment { seq, facts: read_segment(&path, true)? });
        }
        let next = replayed.last().map_or(1, |s| s.seq + 1);
        let file = create_segment(dir, next)?;
        let (tx, rx) = mpsc::channel();
        let thread_dir = dir.to_owned();
        std::thread::Builder::new()
            .name("facts-wal".into())
            .spawn(move || writer_loop(&thread_dir, file, next, &rx))?;
        Ok((Self { tx, dir: dir.to_owned() }, replayed))
    }

    /// Appends one batch; resolves with the segment number once the batch is fsynced.
    pub async fn append(&self, facts: &[RequestFact]) -> io::Result<u64> {
        let payload = encode(facts)?;
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Append { payload, done }).map_err(|_| io::Error::other("WAL writer stopped"))?;
        rx.await.map_err(|_| io::Error::other("WAL writer stopped"))?
    }

    /// Seals the open segment and starts the next; returns the sealed segment's number.
    pub async fn rotate(&self) -> io::Result<u64> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Command::Rotate { done }).map_err(|_| io::Error::other("WAL writer stopped"))?;
        rx.await.map_err(|_| io::Error::other("WAL writer stopped"))?
    }

    /// Deletes sealed segments up to and including `through` (their facts are in Iceberg).
    pub fn delete_through(&self, through: u64) -> io::Result<()> {
        delete_through(&self.dir, through)
    }
}

/// Reads the sealed segments of `dir` up to and including `through`.
pub fn read_sealed_in(dir: &Path, through: u64) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for (seq, path) in list_segments(dir)? {
        if seq <= through {
            out.push(Segment { seq, facts: read_segment(&path, false)? });
        }
    }
    Ok(out)
}

/// Deletes segments `≤ through` in `dir`; used at start-up before replay too.
pub fn delete_through(dir: &Path, through: u64) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for (seq, path) in list_segments(dir)? {
        if seq <= through {
            fs::remove_file(path)?;
        }
    }
    File::open(dir)?.sync_all()
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.wal"))
}

fn create_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, seq))?;
    // The new name must survive a crash too, or replay would miss the segment.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every intact frame; with `repair`, cuts the file after the last intact frame.
fn read_segment(path: &Path, repair: bool) -> io::Result<Vec<RequestFact>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut facts = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
        let end = pos + 8 + len;
        if len > MAX_FRAME || end > bytes.len() {
            break;
        }
        let payload = &bytes[pos + 8..end];
        if crc32fast::hash(payload) != crc {
            break;
        }
        decode(payload, &mut facts)?;
        pos = end;
    }
    if pos < bytes.len() && repair {
        tracing::warn!(path = %path.display(), kept = pos, dropped = bytes.len() - pos, "cutting torn WAL tail");
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(pos as u64)?;
        file.sync_all()?;
    }
    Ok(facts)
}

/// First byte of a binary payload (a JSON one starts with `[`).
const BINARY_V1: u8 = 1;

/// `[1][count u32]` then per fact: id (16), event time in ns since the epoch (i64), status
/// (u16), latency (f64), then service, method, path template and user-agent family as
/// `[len u16][utf-8]` (the family's length is +1, 0 meaning none). Little endian throughout.
pub fn encode(facts: &[RequestFact]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(5 + facts.len() * 64);
    out.push(BINARY_V1);
    out.extend_from_slice(&u32::try_from(facts.len()).map_err(io::Error::other)?.to_le_bytes());
    let put_str = |out: &mut Vec<u8>, s: &str, bias: u16| -> io::Result<()> {
        let len = u16::try_from(s.len())
            .ok()
            .and_then(|n| n.checked_add(bias))
            .ok_or_else(|| io::Error::other("string too long for the WAL"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        Ok(())
    };
    for f in facts {
        let nanos = f.event_time.timestamp_nanos_opt().ok_or_else(|| io::Error::other("event_time out of range"))?;
        out.extend_from_slice(f.event_id.as_bytes());
        out.extend_from_slice(&nanos.to_le_bytes());
        out.extend_from_slice(&f.status_code.to_le_bytes());
        out.extend_from_slice(&f.latency_ms.to_le_bytes());
        put_str(&mut out, &f.service, 0)?;
        put_str(&mut out, &f.method, 0)?;
        put_str(&mut out, &f.path_template, 0)?;
        match &f.user_agent_family {
            None => out.extend_from_slice(&0u16.to_le_bytes()),
            Some(ua) => put_str(&mut out, ua, 1)?,
        }
    }
    Ok(out)
}

/// Appends the facts of one payload (binary or legacy JSON) to `out`.
pub fn decode(payload: &[u8], out: &mut Vec<RequestFact>) -> io::Result<()> {
    if payload.first() != Some(&BINARY_V1) {
        let batch: Vec<RequestFact> = serde_json::from_slice(payload).map_err(io::Error::other)?;
        out.extend(batch);
        return Ok(());
    }
    let mut r = Reader { bytes: payload, pos: 1 };
    let count = u32::from_le_bytes(r.array()?) as usize;
    out.reserve(count.min(payload.len() / 40));
    let mut strings = Interner::default();
    for _ in 0..count {
        let event_id = uuid::Uuid::from_bytes(r.array()?);
        let event_time = chrono::DateTime::from_timestamp_nanos(i64::from_le_bytes(r.array()?));
        let status_code = u16::from_le_bytes(r.array()?);
        let latency_ms = f64::from_le_bytes(r.array()?);
        let service = strings.get(r.string()?);
        let method = strings.get(r.string()?);
        let path_template = strings.get(r.string()?);
        let user_agent_family = match u16::from_le_bytes(r.array()?) {
            0 => None,
            n => Some(strings.get(r.take(usize::from(n - 1)).and_then(utf8)?)),
        };
        out.push(RequestFact {
            event_id,
            event_time,
            service,
            method,
            path_template,
            status_code,
            latency_ms,
            user_agent_family,
        });
    }
    if r.pos == payload.len() { Ok(()) } else { Err(io::Error::other("trailing bytes in a WAL frame")) }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| io::Error::other("WAL frame ends inside a fact"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn string(&mut self) -> io::Result<&'a str> {
        let len = u16::from_le_bytes(self.array()?);
        self.take(usize::from(len)).and_then(utf8)
    }
}

fn utf8(bytes: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(bytes).map_err(io::Error::other)
}

fn writer_loop(dir: &Path, mut file: File, mut seq: u64, rx: &mpsc::Receiver<Command>) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut waiting: Vec<oneshot::Sender<io::Result<u64>>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Drain everything queued so far into one write + one fsync.
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append { payload, done } => {
                    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                    buf.extend_from_slice(&payload);
                    waiting.push(done);
                    if buf.len() < (64 << 20) {
                        next = rx.try_recv().ok();
                    }
                }
                Command::Rotate { done } => {
                    let result = commit(&mut file, &mut buf, seq, &mut waiting).and_then(|()| {
                        let sealed = seq;
                        file = create_segment(dir, seq + 1)?;
                        seq += 1;
                        Ok(sealed)
                    });
                    let _ = done.send(result);
                }
            }
        }
        if let Err(err) = commit(&mut file, &mut buf, seq, &mut waiting) {
            tracing::error!(error = %err, "WAL write failed");
        }
    }
}

/// Writes the buffered frames, syncs, and answers their callers.
fn commit(
    file: &mut File,
    buf: &mut Vec<u8>,
    seq: u64,
    waiting: &mut Vec<oneshot::Sender<io::Result<u64>>>,
) -> io::Result<()> {
    if waiting.is_empty() {
        return Ok(());
    }
    let result = file.write_all(buf).and_then(|()| file.sync_data());
    buf.clear();
    for done in waiting.drain(..) {
        let _ = done.send(match &result {
            Ok(()) => Ok(seq),
            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
        });
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write as _;

    use super::*;

    fn fact(i: u16) -> RequestFact {
        RequestFact {
            event_id: uuid::Uuid::now_v7(),
            event_time: chrono::Utc::now(),
            service: "shop".into(),
            method: "GET".into(),
            path_template: "/p".into(),
            status_code: 200 + i,
            latency_ms: 1.0,
            user_agent_family: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_keeps_acknowledged_frames_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, replayed) = Wal::open(dir.path()).unwrap();
        assert!(replayed.is_empty());
        let seq = wal.append(&[fact(0), fact(1)]).await.unwrap();
        wal.append(&[fact(2)]).await.unwrap();
        drop(wal);
        // A crash mid-write: half a frame header and some bytes of a payload.
        let path = segment_path(dir.path(), seq);
        let clean_len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&[200, 1, 0, 0, 9, 9]).unwrap();
        let (_wal, replayed) = Wal::open(dir.path()).unwrap();
        let facts: Vec<u16> = replayed.iter().flat_map(|s| s.facts.iter().map(|f| f.status_code)).collect();
        assert_eq!(facts, vec![200, 201, 202]);
        assert_eq!(fs::metadata(&path).unwrap().len(), clean_len, "torn tail cut off");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_seals_segments_and_deletion_is_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let first = wal.append(&[fact(0)]).await.unwrap();
        let sealed = wal.rotate().await.unwrap();
        assert_eq!(sealed, first);
        let second = wal.append(&[fact(1)]).await.unwrap();
        assert_eq!(second, sealed + 1);
        assert_eq!(read_sealed_in(dir.path(), sealed).unwrap().iter().map(|s| s.facts.len()).sum::<usize>(), 1);
        wal.delete_through(sealed).unwrap();
        drop(wal);
        let (_wal, replayed) = Wal::open(dir.path()).unwrap();
        let facts: Vec<u16> = replayed.iter().flat_map(|s| s.facts.iter().map(|f| f.status_code)).collect();
        assert_eq!(facts, vec![201]);
    }

    #[test]
    fn binary_frames_round_trip_and_json_frames_from_earlier_versions_are_read() {
        let mut facts = vec![fact(0), fact(99)];
        facts[1].user_agent_family = Some("Firefox é".into());
        facts[1].path_template = "/products/{id}/ünïcode".into();
        facts[1].latency_ms = 0.123_456_789;
        facts.push(RequestFact { user_agent_family: Some("".into()), ..fact(3) });
        let mut back = Vec::new();
        decode(&encode(&facts).unwrap(), &mut back).unwrap();
        assert_eq!(back, facts);

        let mut legacy = Vec::new();
        decode(&serde_json::to_vec(&facts).unwrap(), &mut legacy).unwrap();
        assert_eq!(legacy, facts);

        let bytes = encode(&facts).unwrap();
        for cut in [1, 5, 30, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], &mut Vec::new()).is_err(), "a frame cut at {cut} was read");
        }
    }
}
