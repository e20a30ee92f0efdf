//! The receive spool: a message being received is kept in memory up to a limit and spills to an
//! unlinked temporary file beyond it. The finished message is exposed as one byte slice (a
//! memory map for spilled messages), because mail-parser 0.11 needs the whole message as `&[u8]`;
//! with a map, the page cache rather than the heap holds a large message, and a trim thread keeps
//! the map's pages from accumulating in the process's resident set (see [`Mapped`]).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Collects a message while it is received.
#[derive(Debug)]
pub struct SpoolWriter {
    mem: Vec<u8>,
    file: Option<io::BufWriter<File>>,
    len: u64,
    memory_limit: usize,
    dir: PathBuf,
}

impl SpoolWriter {
    /// `memory_limit`: bytes kept in memory before spilling into an unlinked file under `dir`.
    pub fn new(memory_limit: usize, dir: impl Into<PathBuf>) -> SpoolWriter {
        SpoolWriter {
            mem: Vec::new(),
            file: None,
            len: 0,
            memory_limit,
            dir: dir.into(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.mem.len() + data.len() > self.memory_limit {
            std::fs::create_dir_all(&self.dir)?;
            let mut f = io::BufWriter::with_capacity(256 * 1024, tempfile::tempfile_in(&self.dir)?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => self.mem.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    pub fn finish(self) -> io::Result<Spooled> {
        match self.file {
            None => Ok(Spooled::Memory(self.mem)),
            Some(f) => {
                let f = f.into_inner().map_err(|e| e.into_error())?;
                if self.len == 0 {
                    return Ok(Spooled::Memory(Vec::new()));
                }
                // SAFETY: the file is an unlinked temporary file owned by this process; nobody
                // else can truncate or modify it while the map lives.
                let map = unsafe { memmap2::Mmap::map(&f)? };
                Ok(Spooled::File(Mapped::new(map, f)))
            }
        }
    }
}

/// A finished message.
#[derive(Debug)]
pub enum Spooled {
    Memory(Vec<u8>),
    File(Mapped),
}

/// A spilled message's memory map. Large ones are registered with the [`trim`] thread, which
/// keeps the process's resident set from growing with the message.
#[derive(Debug)]
pub struct Mapped {
    map: memmap2::Mmap,
    /// Where the message starts in the file (a queue file's envelope line comes first). The
    /// whole file is mapped, so that the map stays page-aligned for the trim thread.
    start: usize,
    _file: File,
    trimmed: bool,
}

impl Mapped {
    fn new(map: memmap2::Mmap, file: File) -> Mapped {
        Mapped::from(map, 0, file)
    }

    fn from(map: memmap2::Mmap, start: usize, file: File) -> Mapped {
        let trimmed = map.len() >= trim::MIN_LEN;
        if trimmed {
            trim::register(map.as_ptr(), map.len());
        }
        Mapped {
            map,
            start,
            _file: file,
            trimmed,
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Before the fields drop, i.e. before the map is unmapped: the trim thread must never
        // advise an address range that is no longer ours.
        if self.trimmed {
            trim::unregister(self.map.as_ptr());
        }
    }
}

/// Bounding the resident set of large spilled messages.
///
/// Every pass over a memory-mapped message (structure scan, decoded sizes, SHA-256, upload,
/// relay) maps its pages into the process; after one pass the resident set is as large as the
/// message, although those pages are clean page cache that the file backs. Every millisecond
/// (a memchr scan maps ~10 MB in that time) this thread drops the page-table entries of the
/// registered maps (`MADV_DONTNEED`, which on a shared file mapping discards nothing: a later
/// access maps the same page-cache page again, a minor fault). So the resident set stays at what
/// the passes touch in one interval, and only the kernel's page cache, which it can reclaim,
/// follows the message size — as with a reader that streams the file through a buffer. The
/// thread sleeps while no large message is in flight.
mod trim {
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::time::Duration;

    /// Maps from this size on are trimmed; smaller ones are not worth a page fault.
    pub(super) const MIN_LEN: usize = 16 << 20;
    const INTERVAL: Duration = Duration::from_millis(1);

    struct Registry {
        /// (address, length) of the registered maps; addresses as integers so that the
        /// registry is `Send` (it only ever hands them to `madvise`).
        maps: Mutex<Vec<(usize, usize)>>,
        changed: Condvar,
    }

    fn registry() -> &'static Registry {
        static REGISTRY: OnceLock<&'static Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let r: &'static Registry = Box::leak(Box::new(Registry {
                maps: Mutex::new(Vec::new()),
                changed: Condvar::new(),
            }));
            let spawned = std::thread::Builder::new()
                .name("spool-trim".into())
                .spawn(move || run(r));
            if let Err(e) = spawned {
                // Without the thread the maps stay resident: more memory, nothing wrong.
                tracing::warn!(error = %e, "spool trim thread not started");
            }
            r
        })
    }

    fn run(r: &'static Registry) {
        let mut maps = r.maps.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            maps = if maps.is_empty() {
                r.changed.wait(maps).unwrap_or_else(|e| e.into_inner())
            } else {
                r.changed
                    .wait_timeout(maps, INTERVAL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            };
            trim_all(&maps);
        }
    }

    /// Call with the registry locked, so that no map is unmapped (see `Mapped::drop`) meanwhile.
    fn trim_all(maps: &[(usize, usize)]) {
        for &(addr, len) in maps {
            // SAFETY: `addr..addr + len` is a live, page-aligned, read-only shared file mapping
            // (registered after mmap, unregistered before munmap, both under the registry's
            // lock, which the caller holds). MADV_DONTNEED only drops its page-table entries;
            // the contents stay those of the file.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        }
    }

    /// Addresses of the registered maps (tests).
    #[cfg(test)]
    pub(super) fn registered() -> Vec<usize> {
        let maps = registry().maps.lock().unwrap_or_else(|e| e.into_inner());
        maps.iter().map(|&(a, _)| a).collect()
    }

    /// One trim pass now, and the number of registered maps (tests).
    #[cfg(test)]
    pub(super) fn trim_now() -> usize {
        let maps = registry().maps.lock().unwrap_or_else(|e| e.into_inner());
        trim_all(&maps);
        maps.len()
    }

    pub(super) fn register(addr: *const u8, len: usize) {
        let r = registry();
        r.maps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((addr as usize, len));
        r.changed.notify_one();
    }

    pub(super) fn unregister(addr: *const u8) {
        let r = registry();
        let mut maps = r.maps.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = maps.iter().position(|&(a, _)| a == addr as usize) {
            maps.swap_remove(i);
        }
    }
}

impl Spooled {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Spooled::Memory(v) => v,
            Spooled::File(m) => &m.map[m.start..],
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_spilled(&self) -> bool {
        matches!(self, Spooled::File(_))
    }

    /// A message already on disk (spool mode's queue file): read into memory when small,
    /// memory-mapped otherwise. The queue never rewrites a message file, so the map stays valid.
    pub fn open(path: &Path) -> io::Result<Spooled> {
        Spooled::open_at(File::open(path)?, 0)
    }

    /// The rest of an open file from `start` on (a queue file after its envelope line): read
    /// into memory when small, memory-mapped otherwise.
    pub fn open_at(mut f: File, start: u64) -> io::Result<Spooled> {
        use std::io::{Read, Seek, SeekFrom};
        let len = f.metadata()?.len();
        if len < start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file of {len} octets, message expected at {start}"),
            ));
        }
        if len - start < 1 << 20 {
            f.seek(SeekFrom::Start(start))?;
            let mut v = Vec::with_capacity((len - start) as usize);
            f.read_to_end(&mut v)?;
            return Ok(Spooled::Memory(v));
        }
        // SAFETY: queue message files are written once before they enter the queue and only
        // removed or renamed (never truncated or modified) afterwards.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(Spooled::File(Mapped::from(map, start as usize, f)))
    }

    /// Spool a complete byte string (tests, re-submission).
    pub fn from_bytes(b: impl Into<Vec<u8>>) -> Spooled {
        Spooled::Memory(b.into())
    }
}

/// The spool directory below the state dir.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_maps_keep_their_contents() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(1024, dir.path());
        let mut expected = sha2::Sha256::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..(trim::MIN_LEN / 4096 + 3) {
            let block: Vec<u8> = (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            expected.update(&block);
            w.write(&block).unwrap();
        }
        let expected = expected.finalize();
        let s = w.finish().unwrap();
        assert!(s.is_spilled());
        // Registered (other tests may hold maps of their own at the same time).
        assert!(trim::trim_now() >= 1);
        assert_eq!(sha2::Sha256::digest(s.as_bytes()), expected);
        trim::trim_now();
        assert_eq!(sha2::Sha256::digest(s.as_bytes()), expected);
        let addr = s.as_bytes().as_ptr() as usize;
        drop(s);
        let maps = trim::registered();
        assert!(!maps.contains(&addr), "unregistered on drop");
    }

    #[test]
    fn stays_in_memory_below_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(10, dir.path());
        w.write(b"hello").unwrap();
        w.write(b"world").unwrap();
        let s = w.finish().unwrap();
        assert!(!s.is_spilled());
        assert_eq!(s.as_bytes(), b"helloworld");
    }

    #[test]
    fn spills_to_file_above_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(10, dir.path());
        w.write(b"hello").unwrap();
        w.write(b"world!").unwrap();
        w.write(b"more").unwrap();
        assert_eq!(w.len(), 15);
        let s = w.finish().unwrap();
        assert!(s.is_spilled());
        assert_eq!(s.as_bytes(), b"helloworld!more");
    }
}
