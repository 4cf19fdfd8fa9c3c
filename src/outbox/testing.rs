//! Fault injection for tests: a file backend whose writes fail while a switch is on.
//!
//! Owns [`FaultyFile`] and its [`FaultSwitch`]; calls only redb's `FileBackend`. Open an
//! outbox on it with [`Outbox::open_with_backend`](super::Outbox::open_with_backend) and
//! [`FaultSwitch::backend`]: every reopen makes a new backend on the same switch, so the
//! production reopen path runs unchanged.

use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, DatabaseError, StorageBackend};

/// EIO on Linux: what a failing disk answers.
const EIO: i32 = 5;

/// Turns write faults on and off for every [`FaultyFile`] made from it.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicBool>, Arc<AtomicI64>);

impl FaultSwitch {
    /// A switch that is off.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, writes, resizes and syncs fail with EIO.
    pub fn fail_writes(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Writes keep working until `syncs` more syncs have succeeded; from then on, writes,
    /// resizes and syncs fail with EIO (a disk that fails in the middle of a commit).
    pub fn fail_after_syncs(&self, syncs: i64) {
        self.1.store(syncs, Ordering::SeqCst);
    }

    /// From now on, the file works again.
    pub fn heal(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether writes fail now.
    pub fn is_failing(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A backend factory for `Outbox::open_with_backend`: opens `path` as a [`FaultyFile`].
    pub fn backend(
        &self,
    ) -> impl Fn(&Path) -> Result<FaultyFile, DatabaseError> + Send + Sync + 'static {
        let switch = self.clone();
        move |path| FaultyFile::open(path, switch.clone())
    }

    fn check(&self) -> io::Result<()> {
        match self.is_failing() {
            true => Err(io::Error::from_raw_os_error(EIO)),
            false => Ok(()),
        }
    }
}

/// redb's file backend, with writes that fail while its switch is on (reads still work).
#[derive(Debug)]
pub struct FaultyFile {
    inner: FileBackend,
    switch: FaultSwitch,
}

impl FaultyFile {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path, switch: FaultSwitch) -> Result<Self, DatabaseError> {
        let file = super::open_file(path)?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            switch,
        })
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.switch.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.switch.check()?;
        self.inner.sync_data()?;
        if self.switch.1.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.switch.fail_writes();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.switch.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
