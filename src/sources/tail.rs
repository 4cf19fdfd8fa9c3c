//! Following one file: where to start, the complete lines added since the last read, and
//! rotation — by rename (the old file is read to its end, then the new one from its start)
//! and by copytruncate (the copy in the same directory is read from the position, then the
//! truncated file from its start). Synchronous; the caller polls it from a thread of its
//! own and commits each [`Read`]'s position with what it did with the lines.

use std::fs::File;
use std::io::{self, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StartAt;

/// Bytes at the start of a file that identify its contents (as Vector's `checksum`
/// fingerprint does): an audit line's first bytes hold its `auditID`.
pub const FINGERPRINT_BYTES: u64 = 256;
/// Most bytes handed over in one read (whole lines; a longer line is read whole).
pub const MAX_CHUNK: usize = 1 << 20;
/// Longest line read; a longer one is skipped (and reported) rather than held in memory.
pub const MAX_LINE: usize = 64 << 20;

/// A file's identity on its file system: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// A checksum of a file's first `len` bytes (at most [`FINGERPRINT_BYTES`]): the same
/// contents under another name or inode (a rename, a copy) have the same fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes it covers (fewer than [`FINGERPRINT_BYTES`] while the file is shorter).
    pub len: u64,
    /// FNV-1a of those bytes (stable across releases, unlike std's hasher).
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            len: bytes.len() as u64,
            hash,
        }
    }

    /// The fingerprint of `file`'s first `len` bytes, or `None` when it is shorter.
    fn read(file: &File, len: u64) -> io::Result<Option<Self>> {
        let head = read_from(file, 0, len as usize)?;
        Ok((head.len() as u64 == len).then(|| Self::of(&head)))
    }

    /// Whether `file` starts with the bytes this fingerprint was taken of.
    fn matches(&self, file: &File) -> io::Result<bool> {
        Ok(Self::read(file, self.len)? == Some(*self))
    }
}

/// Where reading stands: the file read (identity and fingerprint) and the byte offset
/// just after the last line handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file being read.
    pub file: FileId,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Bytes of it handed over.
    pub offset: u64,
}

/// Lines read from a file, and the position once they are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Whole lines (a file that will not grow again may end in a line without newline);
    /// empty when only the position moves (the start, a skipped line).
    pub lines: Vec<u8>,
    /// The file they come from (its name when it was opened).
    pub from: PathBuf,
    /// Their offset in it.
    pub at: u64,
    /// The position after them.
    pub position: Position,
    /// Bytes of an overlong line skipped just before `position`.
    pub skipped: u64,
}

/// Whether the file being read may still grow (a partial last line waits for its newline)
/// or is finished (rotated away, a copy: its last line is taken as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Growing,
    Final,
}

/// Where to start when nothing is being read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Where the last run stopped.
    Saved(Position),
    /// First run on this path.
    Fresh(StartAt),
    /// Already started.
    Started,
}

/// An open file and how far it has been handed over.
#[derive(Debug)]
struct Reading {
    file: File,
    name: PathBuf,
    id: FileId,
    fingerprint: Fingerprint,
    offset: u64,
}

impl Reading {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let len = meta.len().min(FINGERPRINT_BYTES);
        let fingerprint = Fingerprint::read(&file, len)?.unwrap_or(Fingerprint::of(&[]));
        Ok(Self {
            file,
            name: path.to_path_buf(),
            id: file_id(&meta),
            fingerprint,
            offset: 0,
        })
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            file: self.id,
            fingerprint: self.fingerprint,
            offset,
        }
    }

    /// Whether the file was truncated since it was read up to `offset`: it is shorter, or
    /// its first bytes changed (truncated and written again past the offset).
    fn truncated(&self, size: u64) -> io::Result<bool> {
        Ok(size < self.offset || !self.fingerprint.matches(&self.file)?)
    }

    /// Takes a longer fingerprint while the file grows towards [`FINGERPRINT_BYTES`].
    fn refresh_fingerprint(&mut self, size: u64) -> io::Result<()> {
        let len = size.min(FINGERPRINT_BYTES);
        if len > self.fingerprint.len
            && let Some(longer) = Fingerprint::read(&self.file, len)?
        {
            self.fingerprint = longer;
        }
        Ok(())
    }

    /// The next lines from the offset, as a [`Read`].
    fn next(&self, ending: Ending) -> io::Result<Option<Read>> {
        let lines = read_lines(&self.file, self.offset, ending)?;
        Ok(lines.map(|(lines, next, skipped)| Read {
            lines,
            from: self.name.clone(),
            at: self.offset,
            position: self.position(next),
            skipped,
        }))
    }
}

/// What is at a path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    id: FileId,
    size: u64,
}

/// One followed path.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    start: Start,
    current: Option<Reading>,
}

impl Tail {
    /// Follows `path` from `saved` (where the last run stopped), else from `start_at`
    /// (when the file does not exist yet, it is read from its beginning once it does).
    pub fn new(path: &Path, saved: Option<Position>, start_at: StartAt) -> Self {
        Self {
            path: path.to_path_buf(),
            start: saved.map_or(Start::Fresh(start_at), Start::Saved),
            current: None,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next lines to hand over, or `None` when there is nothing new. The first read
    /// of a fresh start carries no lines, only the start position, so that it is stored.
    /// The same read comes back until [`Tail::advance`] takes it.
    pub fn poll(&mut self) -> io::Result<Option<Read>> {
        // A rotation takes at most two steps (a truncation's copy, then the file again).
        for _ in 0..3 {
            let at_path = found(&self.path)?;
            if self.current.is_none() {
                if let Some(start) = self.begin(at_path)? {
                    return Ok(Some(start));
                }
                if self.current.is_none() {
                    return Ok(None);
                }
                continue;
            }
            let step = match (&self.current, at_path) {
                (Some(reading), Some(now)) if now.id == reading.id => self.poll_followed(now)?,
                (_, Some(_)) => self.poll_rotated()?,
                // The path is gone (between a rename and the new file): what is whole.
                (_, None) => Step::Done(self.read(Ending::Growing)?),
            };
            if let Step::Done(read) = step {
                return Ok(read);
            }
        }
        Ok(None)
    }

    /// Takes a read as handled: the next poll goes on after it.
    pub fn advance(&mut self, read: &Read) {
        if let Some(reading) = self
            .current
            .as_mut()
            .filter(|r| r.id == read.position.file && r.name == read.from)
        {
            reading.offset = read.position.offset;
        }
    }

    fn read(&self, ending: Ending) -> io::Result<Option<Read>> {
        match &self.current {
            Some(reading) => reading.next(ending),
            None => Ok(None),
        }
    }

    /// The path still names the file being read: new lines, unless it was truncated.
    fn poll_followed(&mut self, now: Found) -> io::Result<Step> {
        let Some(reading) = self.current.as_mut() else {
            return Ok(Step::Again);
        };
        if reading.truncated(now.size)? {
            let position = reading.position(reading.offset);
            self.current = Some(self.after_truncation(&position, Some(now.id))?);
            return Ok(Step::Again);
        }
        reading.refresh_fingerprint(now.size)?;
        Ok(Step::Done(reading.next(Ending::Growing)?))
    }

    /// The path names another file: the one being read was renamed (or deleted) or is a
    /// copy; read it to its end, then switch to the path from its start.
    fn poll_rotated(&mut self) -> io::Result<Step> {
        if let Some(read) = self.read(Ending::Final)? {
            return Ok(Step::Done(Some(read)));
        }
        let next = Reading::open(&self.path)?;
        if let Some(done) = &self.current {
            tracing::info!(
                from = %done.name.display(),
                to = %next.name.display(),
                "rotated file read to its end; following the new file from its start"
            );
        }
        self.current = Some(next);
        Ok(Step::Again)
    }

    /// Opens the first file: resumes a saved position, or starts fresh (returning the
    /// start position, to be stored).
    fn begin(&mut self, at_path: Option<Found>) -> io::Result<Option<Read>> {
        match self.start {
            Start::Saved(position) => {
                self.current = self.resume(&position, at_path)?;
                self.start = Start::Started;
                Ok(None)
            }
            Start::Fresh(start_at) => {
                let Some(_) = at_path else {
                    // Created later: everything in it is new.
                    self.start = Start::Fresh(StartAt::Beginning);
                    return Ok(None);
                };
                let mut reading = Reading::open(&self.path)?;
                if start_at == StartAt::End {
                    reading.offset = end_of_last_line(&reading.file)?;
                }
                tracing::info!(
                    path = %self.path.display(),
                    offset = reading.offset,
                    "first run on this file: reading from its {}",
                    match start_at {
                        StartAt::End => "end",
                        StartAt::Beginning => "beginning",
                    }
                );
                let read = Read {
                    lines: Vec::new(),
                    from: reading.name.clone(),
                    at: reading.offset,
                    position: reading.position(reading.offset),
                    skipped: 0,
                };
                self.current = Some(reading);
                self.start = Start::Started;
                Ok(Some(read))
            }
            Start::Started => {
                // Nothing was open (the path did not exist): it is new.
                if at_path.is_some() {
                    self.current = Some(Reading::open(&self.path)?);
                }
                Ok(None)
            }
        }
    }

    /// Finds the file a saved position points into: the path itself when it still holds
    /// that file untruncated (the same inode, or the same first bytes: a device number
    /// may change across a reboot, on NFS for one); else the renamed file or the copy in
    /// the same directory; else the path from its start.
    fn resume(&self, saved: &Position, at_path: Option<Found>) -> io::Result<Option<Reading>> {
        if let Some(now) = at_path {
            let mut reading = Reading::open(&self.path)?;
            let same_inode = now.id == saved.file;
            let same_start =
                saved.fingerprint.len > 0 && saved.fingerprint.matches(&reading.file)?;
            reading.fingerprint = saved.fingerprint;
            reading.offset = saved.offset;
            if (same_inode || same_start) && !reading.truncated(now.size)? {
                if !same_inode {
                    tracing::info!(path = %self.path.display(), "the followed file has another device or inode number but the same contents; resuming it");
                }
                return Ok(Some(reading));
            }
        }
        if let Some(found) = find_predecessor(&self.path, saved, at_path.map(|f| f.id))? {
            tracing::info!(
                file = %found.name.display(),
                offset = found.offset,
                "resuming the file read before the restart, now under another name"
            );
            return Ok(Some(found));
        }
        if saved.offset > 0 {
            tracing::warn!(
                path = %self.path.display(),
                "the file read before the restart is gone (rotated away, compressed or deleted); reading the path from its start"
            );
        }
        match at_path {
            Some(_) => Ok(Some(Reading::open(&self.path)?)),
            None => Ok(None),
        }
    }

    /// The followed file was truncated (copytruncate): read its copy from the position,
    /// else (no copy found) go on from the start of the truncated file.
    fn after_truncation(
        &self,
        position: &Position,
        exclude: Option<FileId>,
    ) -> io::Result<Reading> {
        if let Some(copy) = find_predecessor(&self.path, position, exclude)? {
            tracing::info!(
                path = %self.path.display(),
                copy = %copy.name.display(),
                offset = copy.offset,
                "file truncated; reading the rest of its copy first"
            );
            return Ok(copy);
        }
        tracing::warn!(
            path = %self.path.display(),
            offset = position.offset,
            "file truncated and no copy of it found in its directory; lines written after the last read and before the truncation are lost"
        );
        Reading::open(&self.path)
    }
}

/// What one step of a poll came to.
enum Step {
    Done(Option<Read>),
    Again,
}

/// The file at `path`, if any.
fn found(path: &Path) -> io::Result<Option<Found>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(Found {
            id: file_id(&meta),
            size: meta.len(),
        })),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {
    FileId { dev: 0, ino: 0 }
}

/// In `path`'s directory, the file `position` was reading, at its offset: the one with
/// its identity (a rename) if its contents still match, else the largest with its
/// fingerprint and at least `offset` bytes (a copy); never the file `exclude`.
fn find_predecessor(
    path: &Path,
    position: &Position,
    exclude: Option<FileId>,
) -> io::Result<Option<Reading>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let candidate = entry?.path();
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        let id = file_id(&meta);
        if !meta.is_file() || Some(id) == exclude || meta.len() < position.offset {
            continue;
        }
        // Without a fingerprint (nothing was in the file) only the identity can tell.
        if id != position.file && position.fingerprint.len == 0 {
            continue;
        }
        let Ok(file) = File::open(&candidate) else {
            continue;
        };
        if !position.fingerprint.matches(&file)? {
            continue;
        }
        if id == position.file {
            best = Some((u64::MAX, candidate));
            break;
        }
        if best.as_ref().is_none_or(|(size, _)| meta.len() > *size) {
            best = Some((meta.len(), candidate));
        }
    }
    let Some((_, name)) = best else {
        return Ok(None);
    };
    let mut reading = Reading::open(&name)?;
    reading.fingerprint = position.fingerprint;
    reading.offset = position.offset;
    Ok(Some(reading))
}

/// Up to `limit` bytes of `file` from `offset` (fewer at its end).
fn read_from(file: &File, offset: u64, limit: usize) -> io::Result<Vec<u8>> {
    let mut handle = file;
    handle.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    handle.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The whole lines of `file` from `offset`: up to [`MAX_CHUNK`] bytes, or one longer
/// line; with [`Ending::Final`] a last line without newline too. Returns the lines, the
/// offset after them, and the bytes of a line over [`MAX_LINE`] skipped instead.
fn read_lines(file: &File, offset: u64, ending: Ending) -> io::Result<Option<(Vec<u8>, u64, u64)>> {
    let mut limit = MAX_CHUNK;
    loop {
        let mut buf = read_from(file, offset, limit)?;
        if buf.is_empty() {
            return Ok(None);
        }
        if let Some(last) = buf.iter().rposition(|b| *b == b'\n') {
            buf.truncate(last + 1);
            let next = offset + buf.len() as u64;
            return Ok(Some((buf, next, 0)));
        }
        if buf.len() < limit {
            // The end of the file, inside a line.
            return Ok(match ending {
                Ending::Growing => None,
                Ending::Final => {
                    let next = offset + buf.len() as u64;
                    Some((buf, next, 0))
                }
            });
        }
        if limit >= MAX_LINE {
            return skip_line(file, offset);
        }
        limit = (limit * 2).min(MAX_LINE);
    }
}

/// Skips the overlong line at `offset`: the offset after its newline, once it has one.
fn skip_line(file: &File, offset: u64) -> io::Result<Option<(Vec<u8>, u64, u64)>> {
    let mut at = offset;
    loop {
        let block = read_from(file, at, MAX_CHUNK)?;
        if block.is_empty() {
            return Ok(None);
        }
        if let Some(newline) = block.iter().position(|b| *b == b'\n') {
            let next = at + newline as u64 + 1;
            return Ok(Some((Vec::new(), next, next - offset)));
        }
        at += block.len() as u64;
    }
}

/// The offset just after `file`'s last newline (0 when it has none): reading at the end
/// starts with the next whole line, never inside one being written.
fn end_of_last_line(file: &File) -> io::Result<u64> {
    const BLOCK: u64 = 64 << 10;
    let mut end = file.metadata()?.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = read_from(file, start, (end - start) as usize)?;
        if let Some(newline) = block.iter().rposition(|b| *b == b'\n') {
            return Ok(start + newline as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn line(i: usize) -> String {
        format!("{{\"auditID\":\"line-{i:05}\",\"stage\":\"ResponseComplete\",\"verb\":\"get\"}}\n")
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Polls until nothing is new, advancing after each read; the lines read, in order.
    fn drain(tail: &mut Tail) -> String {
        let mut out = String::new();
        while let Some(read) = tail.poll().unwrap() {
            out.push_str(std::str::from_utf8(&read.lines).unwrap());
            tail.advance(&read);
        }
        out
    }

    fn lines(range: std::ops::Range<usize>) -> String {
        range.map(line).collect()
    }

    #[test]
    fn fingerprints_tell_contents_apart_and_survive_growth() {
        let a = Fingerprint::of(b"{\"auditID\":\"a\"}");
        assert_eq!(a, Fingerprint::of(b"{\"auditID\":\"a\"}"));
        assert_ne!(a, Fingerprint::of(b"{\"auditID\":\"b\"}"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, "{\"auditID\":\"a\"}");
        let file = File::open(&path).unwrap();
        assert!(a.matches(&file).unwrap());
        append(&path, "\nmore");
        assert!(
            a.matches(&file).unwrap(),
            "a prefix's fingerprint holds as the file grows"
        );
        std::fs::write(&path, "{\"auditID\":\"b\"}\n").unwrap();
        assert!(!a.matches(&file).unwrap());
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        assert!(tail.poll().unwrap().is_none(), "no file yet");
        let whole = line(1);
        append(&path, &line(0));
        append(&path, &whole[..10]);
        assert_eq!(drain(&mut tail), line(0));
        append(&path, &whole[10..]);
        assert_eq!(drain(&mut tail), whole);
    }

    #[test]
    fn a_fresh_start_at_the_end_skips_what_is_there_and_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let half = line(2);
        append(&path, &lines(0..2));
        append(&path, &half[..7]);
        let mut tail = Tail::new(&path, None, StartAt::End);
        let start = tail.poll().unwrap().unwrap();
        assert!(start.lines.is_empty());
        assert_eq!(start.position.offset, lines(0..2).len() as u64);
        tail.advance(&start);
        append(&path, &half[7..]);
        assert_eq!(
            drain(&mut tail),
            half,
            "the line being written when it started"
        );
    }

    #[test]
    fn a_fresh_start_at_the_beginning_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..3));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        assert_eq!(tail.poll().unwrap().unwrap().position.offset, 0);
        assert_eq!(drain(&mut tail), lines(0..3));
    }

    #[test]
    fn the_same_read_comes_back_until_it_is_advanced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..2));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        let start = tail.poll().unwrap().unwrap();
        tail.advance(&start);
        let first = tail.poll().unwrap().unwrap();
        assert_eq!(tail.poll().unwrap().unwrap(), first);
        tail.advance(&first);
        assert!(tail.poll().unwrap().is_none());
    }

    #[test]
    fn rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..2));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        assert_eq!(drain(&mut tail), lines(0..2));
        append(&path, &lines(2..4));
        let last = line(4);
        append(&path, &last[..last.len() - 1]); // its newline never comes
        std::fs::rename(&path, dir.path().join("audit-2026-12-03T15-00-00.000.log")).unwrap();
        assert_eq!(
            drain(&mut tail),
            lines(2..4),
            "renamed, no new file yet: whole lines"
        );
        append(&path, &lines(5..7));
        assert_eq!(
            drain(&mut tail),
            format!("{}{}", &last[..last.len() - 1], lines(5..7)),
            "the old file's last line as it is, then the new file from its start"
        );
    }

    #[test]
    fn copytruncate_reads_the_rest_of_the_copy_then_the_file_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..3));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        assert_eq!(drain(&mut tail), lines(0..3));
        append(&path, &lines(3..6)); // written, not read yet
        std::fs::copy(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // Written again past the old offset before the next poll: the fingerprint tells.
        append(&path, &lines(6..12));
        assert_eq!(drain(&mut tail), lines(3..12));
    }

    #[test]
    fn copytruncate_without_a_copy_goes_on_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..3));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        assert_eq!(drain(&mut tail), lines(0..3));
        std::fs::write(&path, "").unwrap();
        append(&path, &lines(3..4));
        assert_eq!(drain(&mut tail), lines(3..4));
    }

    #[test]
    fn a_saved_position_resumes_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..3));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        let mut saved = None;
        while let Some(read) = tail.poll().unwrap() {
            saved = Some(read.position);
            tail.advance(&read);
        }
        append(&path, &lines(3..5));
        let mut again = Tail::new(&path, saved, StartAt::End);
        assert_eq!(drain(&mut again), lines(3..5));
    }

    /// The position of everything read so far.
    fn read_all(tail: &mut Tail) -> Position {
        let mut saved = None;
        while let Some(read) = tail.poll().unwrap() {
            saved = Some(read.position);
            tail.advance(&read);
        }
        saved.unwrap()
    }

    /// Reads lines 0..2 of a file, runs `while_stopped(dir, path)`, then resumes from the
    /// saved position: the lines read then.
    fn resumed_after(while_stopped: impl FnOnce(&Path, &Path)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..2));
        let saved = read_all(&mut Tail::new(&path, None, StartAt::Beginning));
        while_stopped(dir.path(), &path);
        drain(&mut Tail::new(&path, Some(saved), StartAt::End))
    }

    #[test]
    fn a_saved_position_follows_a_rename_made_while_stopped() {
        let read = resumed_after(|dir, path| {
            append(path, &lines(2..4));
            std::fs::rename(path, dir.join("audit-1.log")).unwrap();
            append(path, &lines(4..6));
        });
        assert_eq!(read, lines(2..6));
    }

    #[test]
    fn a_saved_position_follows_a_copytruncate_made_while_stopped() {
        let read = resumed_after(|dir, path| {
            append(path, &lines(2..4));
            std::fs::copy(path, dir.join("audit.log.1")).unwrap();
            std::fs::write(path, "").unwrap();
            append(path, &lines(4..9));
        });
        assert_eq!(read, lines(2..9));
    }

    #[test]
    fn a_saved_position_resumes_a_file_whose_device_number_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &lines(0..2));
        let mut saved = read_all(&mut Tail::new(&path, None, StartAt::Beginning));
        saved.file.dev += 1;
        append(&path, &lines(2..4));
        assert_eq!(
            drain(&mut Tail::new(&path, Some(saved), StartAt::End)),
            lines(2..4)
        );
    }

    #[test]
    fn a_saved_position_whose_file_is_gone_reads_the_path_from_its_start() {
        let read = resumed_after(|_, path| {
            std::fs::remove_file(path).unwrap();
            append(path, &lines(2..3));
        });
        assert_eq!(read, lines(2..3));
    }

    #[test]
    fn an_overlong_line_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let long = "x".repeat(MAX_LINE + 10);
        append(&path, &format!("{long}\n{}", line(1)));
        let mut tail = Tail::new(&path, None, StartAt::Beginning);
        let start = tail.poll().unwrap().unwrap();
        tail.advance(&start);
        let skipped = tail.poll().unwrap().unwrap();
        assert!(skipped.lines.is_empty());
        assert_eq!(skipped.skipped, long.len() as u64 + 1);
        tail.advance(&skipped);
        assert_eq!(drain(&mut tail), line(1));
    }
}
