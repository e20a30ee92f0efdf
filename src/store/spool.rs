//! The receive spool: a message being received is kept in memory up to a limit and spills to an
//! unlinked temporary file beyond it. The finished message is exposed as one byte slice (a
//! memory map for spilled messages), because mail-parser 0.11 needs the whole message as `&[u8]`;
//! with a map, the page cache rather than the heap holds a large message.

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
                Ok(Spooled::File { map, _file: f })
            }
        }
    }
}

/// A finished message.
#[derive(Debug)]
pub enum Spooled {
    Memory(Vec<u8>),
    File { map: memmap2::Mmap, _file: File },
}

impl Spooled {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Spooled::Memory(v) => v,
            Spooled::File { map, .. } => map,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_spilled(&self) -> bool {
        matches!(self, Spooled::File { .. })
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
