//! The bytes of uploaded files on disk: a content-addressed store in a
//! `files/` directory beside the database (mode 0700), and the upload in
//! progress that streams into it.
//!
//! An upload is written to `files/tmp/<slot>.part` (0600, created new), a
//! chunk at a time, hashing as it goes; at the end its length is checked
//! against what was announced, it is synced, and renamed to
//! `files/<first two hex digits>/<SHA-256 in hex>`. The same bytes uploaded
//! twice are stored once. An upload that fails, is cut short or is dropped
//! removes its temporary file; leftovers of a crash are removed at start.
//!
//! The type is detected from the first bytes (the `infer` crate), never from
//! the name, and decides how a file is served: only PNG, JPEG, GIF and WebP
//! are shown inline; everything else (HTML, SVG and XML included) is an
//! attachment.
//!
//! What is stored where in SQLite (owner, name, quotas, expiry) is not
//! here; nor is HTTP. Everything here does blocking disk I/O: it runs on
//! the [`Writer`]'s thread, never on the event loop. The loop hands it the
//! body of each upload a chunk at a time through a bounded queue (a full
//! queue gives the chunk back, and the loop stops reading that socket
//! until there is room), and the writer wakes the loop with each outcome,
//! as the password workers do.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Seek, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of the store's directories.
const DIR_MODE: u32 = 0o700;
/// Bytes of an upload handed to the disk at a time (see
/// `Part::write_behind`).
const WRITE_BEHIND: u64 = 8 << 20;
/// Bytes kept from the start of an upload to detect its type.
const HEAD: usize = 8 * 1024;
/// Files of at least this many bytes are written and read around the page
/// cache (`O_DIRECT`, see [`Direct`]); smaller ones, the screenshots and
/// documents a room reads again and again, through it.
const DIRECT_FROM: u64 = 16 << 20;
/// Bytes of a direct write: the size of an upload's aligned buffer.
const DIRECT_BUF: usize = 256 * 1024;
/// The alignment direct I/O asks for: the largest logical block size of a
/// common disk (4 KiB sectors; 512-byte ones are satisfied too).
const DIRECT_ALIGN: usize = 4096;

/// A file's content hash (SHA-256): its name in the store.
pub type Sha = [u8; 32];

/// How a stored file is served, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// Its `Content-Type`.
    pub mime: &'static str,
    /// Shown in the browser (`Content-Disposition: inline`) rather than
    /// downloaded; true only for the four plain image types.
    pub inline: bool,
}

impl Kind {
    /// The type of a file that starts with `head`.
    pub fn detect(head: &[u8]) -> Kind {
        const INLINE: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
        match infer::get(head) {
            Some(t) => Kind {
                mime: t.mime_type(),
                inline: INLINE.contains(&t.mime_type()),
            },
            None => Kind {
                mime: "application/octet-stream",
                inline: false,
            },
        }
    }
}

/// What a finished upload became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub sha: Sha,
    pub size: u64,
    pub kind: Kind,
}

/// The store: `files/` and its `tmp/`.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// The store beside the database at `db` (made if missing, 0700), with
    /// the temporary files of uploads a crash interrupted removed.
    pub fn open(db: &Path) -> io::Result<Blobs> {
        let blobs = Blobs::at(db);
        make_dir(&blobs.dir)?;
        make_dir(&blobs.tmp())?;
        for entry in fs::read_dir(blobs.tmp())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                fs::remove_file(&path)?;
                log::info!("removed an unfinished upload: {}", path.display());
            }
        }
        Ok(blobs)
    }

    /// The store beside the database at `db`, as it is: nothing is made
    /// or removed (for a read-only database, whose files can still be
    /// served).
    pub fn at(db: &Path) -> Blobs {
        let parent = db.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = parent.unwrap_or(Path::new(".")).join("files");
        Blobs { dir }
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Where the file with hash `sha` is kept.
    pub fn path_of(&self, sha: &Sha) -> PathBuf {
        let hex = hex(sha);
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Starts an upload of exactly `expected` bytes for slot `slot` (a
    /// name of letters, digits, `-` and `_`, made by the server).
    pub fn begin(&self, slot: &str, expected: u64) -> io::Result<Part> {
        if slot.is_empty()
            || !slot
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad slot name"));
        }
        let path = self.tmp().join(format!("{slot}.part"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let direct = if expected >= DIRECT_FROM && set_direct(&file, true) {
            Some(Direct::new())
        } else {
            None
        };
        Ok(Part {
            blobs: self.clone(),
            path: Some(path),
            file,
            direct,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            head: Vec::new(),
            written: 0,
            expected,
        })
    }

    /// Opens a stored file to read it.
    pub fn open_blob(&self, sha: &Sha) -> io::Result<File> {
        File::open(self.path_of(sha))
    }

    /// The hashes of every stored file (for the sweep at start).
    pub fn all(&self) -> io::Result<Vec<Sha>> {
        let mut found = Vec::new();
        for dir in fs::read_dir(&self.dir)? {
            let dir = dir?.path();
            let Some(prefix) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if prefix.len() != 2 || !dir.is_dir() {
                continue;
            }
            for file in fs::read_dir(&dir)? {
                let name = file?.file_name();
                if let Some(sha) = name.to_str().and_then(unhex) {
                    found.push(sha);
                }
            }
        }
        Ok(found)
    }

    /// Removes a stored file (once no record points at it). Gone already
    /// is not an error.
    pub fn remove(&self, sha: &Sha) -> io::Result<()> {
        match fs::remove_file(self.path_of(sha)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// An upload being written. Dropped unfinished, it removes its temporary
/// file.
pub struct Part {
    blobs: Blobs,
    /// The temporary file's path, until it is renamed or removed.
    path: Option<PathBuf>,
    file: File,
    /// The aligned buffer of a big upload written with `O_DIRECT`.
    direct: Option<Direct>,
    hasher: ring::digest::Context,
    head: Vec<u8>,
    written: u64,
    expected: u64,
}

impl Part {
    /// Appends a chunk of the body. More than announced is an error (and
    /// nothing past the announced length is written).
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let room = self.expected - self.written;
        if chunk.len() as u64 > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "longer than announced",
            ));
        }
        match &mut self.direct {
            Some(direct) => {
                let mut rest = chunk;
                while !rest.is_empty() {
                    rest = direct.fill(rest);
                    if direct.is_full() {
                        direct.write_to(&self.file)?;
                    }
                }
            }
            None => {
                self.file.write_all(chunk)?;
                self.write_behind(self.written, self.written + chunk.len() as u64);
            }
        }
        self.hasher.update(chunk);
        if self.head.len() < HEAD {
            let take = chunk.len().min(HEAD - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Starts writing each [`WRITE_BEHIND`] bytes to disk as soon as they
    /// are in the page cache, from this thread, and waits for the window
    /// before the last to be on disk. Left to the kernel, a big upload's
    /// gigabyte of dirty pages is written back by its flusher threads at
    /// their own (normal) priority, competing with the event loop on a
    /// small machine, and the final sync waits for all of it at once.
    /// Advice only: a failure here is found by the sync at the end.
    fn write_behind(&self, before: u64, after: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let window = WRITE_BEHIND;
            if before / window == after / window {
                return;
            }
            let end = after / window * window;
            let fd = self.file.as_raw_fd();
            let (Ok(start), Ok(len)) = (
                libc::off64_t::try_from(end - window),
                libc::off64_t::try_from(window),
            ) else {
                return;
            };
            // SAFETY: sync_file_range only starts or waits for writeback of
            // a range of our own open file.
            unsafe {
                libc::sync_file_range(fd, start, len, libc::SYNC_FILE_RANGE_WRITE);
                if start >= len {
                    libc::sync_file_range(
                        fd,
                        start - len,
                        len,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The body is complete: checks its length, makes it durable and moves
    /// it into the store under its hash.
    pub fn finish(mut self) -> io::Result<Stored> {
        if self.written != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} bytes, {} announced", self.written, self.expected),
            ));
        }
        if let Some(mut direct) = self.direct.take() {
            // The tail is shorter than a block: written through the cache.
            set_direct(&self.file, false);
            self.file.write_all(direct.filled())?;
        }
        self.file.sync_all()?;
        let digest = self.hasher.clone().finish();
        let mut sha = [0u8; 32];
        sha.copy_from_slice(digest.as_ref());
        let to = self.blobs.path_of(&sha);
        if let Some(dir) = to.parent() {
            make_dir(dir)?;
        }
        let from = self.path.take().expect("a part has its path until it ends");
        if to.exists() {
            // The same bytes are stored already.
            fs::remove_file(&from)?;
        } else {
            fs::rename(&from, &to)?;
            if let Some(dir) = to.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Stored {
            sha,
            size: self.written,
            kind: Kind::detect(&self.head),
        })
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = fs::remove_file(&path)
        {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

/// A buffer whose window starts at a multiple of [`DIRECT_ALIGN`] in
/// memory, as direct I/O needs.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    size: usize,
}

impl Aligned {
    fn new(size: usize) -> Aligned {
        let raw = vec![0u8; size + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Aligned { raw, start, size }
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.size]
    }
}

/// The buffer of an upload written around the page cache. Through the
/// cache, a gigabyte's upload is copied into a gigabyte of dirty pages
/// that the kernel then writes back on its own threads, at normal
/// priority; direct writes hand the disk each [`DIRECT_BUF`] from this
/// buffer while the files thread (at nice 10) waits. A 1 GiB transfer cost
/// the server about an eighth less CPU so (BENCHMARKS.md, "Files around
/// the page cache"). Every write but the last is a whole buffer, so that
/// the file's offset stays aligned.
struct Direct {
    buf: Aligned,
    /// Bytes of the buffer in use.
    len: usize,
    /// The file's offset where the buffer's bytes go.
    at: u64,
}

impl Direct {
    fn new() -> Direct {
        Direct {
            buf: Aligned::new(DIRECT_BUF),
            len: 0,
            at: 0,
        }
    }

    /// Copies what fits of `bytes`; the rest is handed back.
    fn fill<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let take = bytes.len().min(DIRECT_BUF - self.len);
        let at = self.len;
        self.buf.window()[at..at + take].copy_from_slice(&bytes[..take]);
        self.len += take;
        &bytes[take..]
    }

    fn is_full(&self) -> bool {
        self.len == DIRECT_BUF
    }

    fn filled(&mut self) -> &[u8] {
        let len = self.len;
        &self.buf.window()[..len]
    }

    /// Writes the full buffer and empties it. A file system may refuse a
    /// direct write it took at `open` (EINVAL: a write cut short by a
    /// file-size limit leaves an unaligned length): then the file leaves
    /// direct I/O and the same bytes are written through the cache, which
    /// gives the real error, if any.
    fn write_to(&mut self, mut file: &File) -> io::Result<()> {
        let at = self.at;
        let bytes = self.filled();
        match file.write_all(bytes) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                set_direct(file, false);
                // What a write before the refused one took stays: the
                // file's offset says where to go on from.
                let done = file.stream_position()?.saturating_sub(at);
                let done = usize::try_from(done).map_or(bytes.len(), |d| d.min(bytes.len()));
                file.write_all(&bytes[done..])?;
            }
            other => other?,
        }
        self.at += self.len as u64;
        self.len = 0;
        Ok(())
    }
}

/// The files thread's buffer for direct reads of big downloads: a
/// download's piece rounded out to whole blocks.
struct ReadBuf(Aligned);

/// Bytes of a download read at a time: the piece the loop asks for, and
/// the largest read directly (a bigger one is read through the cache).
pub(crate) const READ_PIECE: usize = 256 * 1024;

impl ReadBuf {
    fn new() -> ReadBuf {
        // One block more for a piece that starts inside a block.
        ReadBuf(Aligned::new(READ_PIECE + DIRECT_ALIGN))
    }

    /// Up to `len` bytes of `file` (opened with `O_DIRECT`) from `offset`,
    /// fewer only at its end, in `into` (emptied first). A piece bigger
    /// than the buffer, or a read the file system refuses, is read through
    /// the cache instead (and so is the rest of the file: it leaves direct
    /// I/O).
    fn read_at(
        &mut self,
        file: &File,
        offset: u64,
        len: usize,
        mut into: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let lead = (offset % DIRECT_ALIGN as u64) as usize;
        let want = (lead + len).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        if want > self.0.size {
            set_direct(file, false);
            return read_at(file, offset, len, into);
        }
        let from = offset - lead as u64;
        let window = &mut self.0.window()[..want];
        let mut got = 0;
        while got < want {
            match file.read_at(&mut window[got..], from + got as u64) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    // A read that ends off a block boundary ended at the
                    // end of the file.
                    if got % DIRECT_ALIGN != 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    set_direct(file, false);
                    return read_at(file, offset, len, into);
                }
                Err(e) => return Err(e),
            }
        }
        let end = got.min(lead + len);
        into.clear();
        into.extend_from_slice(window.get(lead..end).unwrap_or_default());
        Ok(into)
    }
}

/// Turns `O_DIRECT` on or off for `file`; false where the file system
/// refuses it (tmpfs before Linux 6.6, for one), which is not an error.
fn set_direct(file: &File, on: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL and F_SETFL on our own open descriptor change only
        // its status flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return false;
            }
            let flags = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            libc::fcntl(fd, libc::F_SETFL, flags) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        false
    }
}

/// Which upload a job or an outcome is about: the loop's name for it,
/// opaque here.
pub type UploadId = u64;

/// Work for the [`Writer`], in the order the loop sends it.
#[derive(Debug)]
pub enum Job {
    /// An upload of exactly `expected` bytes into slot `slot` begins.
    Begin {
        id: UploadId,
        slot: String,
        expected: u64,
    },
    /// The next piece of its body.
    Chunk { id: UploadId, bytes: Vec<u8> },
    /// The body is complete.
    Finish { id: UploadId },
    /// The client went away (or was refused): what was written goes.
    Abort { id: UploadId },
    /// A download wants `len` bytes of the file `sha` from `offset`: the
    /// answer is [`Outcome::Data`] (the file stays open until
    /// [`Job::Close`]). The bytes come back in `buf`, whatever it held: a
    /// download hands back the vector of its last piece, so that one
    /// allocation goes back and forth instead of a fresh one per piece
    /// (a piece is over the allocator's mmap threshold: each new one was
    /// mapped here, faulted in page by page and unmapped on the loop).
    Read {
        id: UploadId,
        sha: Sha,
        offset: u64,
        len: usize,
        buf: Vec<u8>,
    },
    /// The download ended.
    Close { id: UploadId },
}

/// What came of an upload: one per upload that began, none after `Abort`.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        id: UploadId,
        stored: Stored,
    },
    Failed {
        id: UploadId,
        why: Failure,
    },
    /// Bytes a [`Job::Read`] asked for (fewer only at the end of the file).
    Data {
        id: UploadId,
        bytes: Vec<u8>,
    },
}

/// Why an upload stored nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// More or fewer bytes than announced.
    WrongLength,
    /// The disk (or the quota of the file system) is full.
    DiskFull,
    /// Any other error of the file system, for the log.
    Io(String),
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        match e.raw_os_error() {
            // EFBIG: past the file-size limit of the process (RLIMIT_FSIZE).
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Failure::DiskFull,
            _ if e.kind() == io::ErrorKind::InvalidData => Failure::WrongLength,
            _ => Failure::Io(e.to_string()),
        }
    }
}

/// A thread that writes uploads to the store and reads downloads from
/// it (the server runs two: one for each direction, so that an upload's
/// fsync never holds up a download).
pub struct Writer {
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<Outcome>,
    /// The loop found the queue full: wake it when a job is taken.
    waiting: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread, with room for `queue` jobs in flight (each chunk
    /// is one: their size bounds the memory uploads hold). `wake` is
    /// called after each outcome is sent.
    pub fn start(
        blobs: Blobs,
        queue: usize,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Writer> {
        let (jobs, rx) = crossbeam_channel::bounded(queue.max(1));
        let (tx, outcomes) = crossbeam_channel::unbounded();
        let waiting = Arc::new(AtomicBool::new(false));
        let told = waiting.clone();
        let thread = std::thread::Builder::new()
            .name("files".into())
            .spawn(move || {
                below_the_loop();
                serve(&blobs, &rx, &tx, &told, &*wake)
            })?;
        Ok(Writer {
            jobs: Some(jobs),
            outcomes,
            waiting,
            thread: Some(thread),
        })
    }

    /// Hands a job over; with the queue full (or the thread gone) the job
    /// comes back, and the loop is woken once the thread takes a job.
    pub fn try_send(&self, job: Job) -> Result<(), Job> {
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => {
                self.waiting.store(true, Ordering::SeqCst);
                job
            }
            TrySendError::Disconnected(job) => job,
        })
    }

    /// The next outcome, if one is ready.
    pub fn try_recv(&self) -> Option<Outcome> {
        self.outcomes.try_recv().ok()
    }
}

impl Drop for Writer {
    /// Lets the thread finish what it was given (uploads not finished are
    /// aborted: their temporary files go), then waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the files thread panicked");
        }
    }
}

fn serve(
    blobs: &Blobs,
    jobs: &Receiver<Job>,
    outcomes: &Sender<Outcome>,
    waiting: &AtomicBool,
    wake: &(dyn Fn() + Send + Sync),
) {
    let mut parts: HashMap<UploadId, Part> = HashMap::new();
    // Downloads being read, each with whether it is read around the cache.
    let mut reading: HashMap<UploadId, (File, bool)> = HashMap::new();
    let mut read_buf: Option<ReadBuf> = None;
    // Uploads that failed: later chunks are dropped, with no second answer.
    let mut failed: HashSet<UploadId> = HashSet::new();
    let answer = |outcome: Outcome| {
        // The loop is gone only at shutdown: nobody waits for the answer.
        if outcomes.send(outcome).is_ok() {
            wake();
        }
    };
    for job in jobs.iter() {
        if waiting.swap(false, Ordering::SeqCst) {
            wake();
        }
        match job {
            Job::Read {
                id,
                sha,
                offset,
                len,
                buf,
            } => {
                let file = match reading.entry(id) {
                    std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        blobs.open_blob(&sha).map(|f| {
                            let big = f.metadata().is_ok_and(|m| m.len() >= DIRECT_FROM);
                            let direct = big && set_direct(&f, true);
                            v.insert((f, direct))
                        })
                    }
                };
                let read = file.and_then(|(f, direct)| {
                    if *direct {
                        read_buf
                            .get_or_insert_with(ReadBuf::new)
                            .read_at(f, offset, len, buf)
                    } else {
                        read_at(f, offset, len, buf)
                    }
                });
                answer(match read {
                    Ok(bytes) => Outcome::Data { id, bytes },
                    Err(e) => {
                        reading.remove(&id);
                        Outcome::Failed {
                            id,
                            why: Failure::of(&e),
                        }
                    }
                });
            }
            Job::Close { id } => {
                reading.remove(&id);
            }
            Job::Begin { id, slot, expected } => match blobs.begin(&slot, expected) {
                Ok(part) => {
                    failed.remove(&id);
                    parts.insert(id, part);
                }
                Err(e) => {
                    failed.insert(id);
                    answer(Outcome::Failed {
                        id,
                        why: Failure::of(&e),
                    });
                }
            },
            Job::Chunk { id, bytes } => {
                let Some(part) = parts.get_mut(&id) else {
                    continue;
                };
                if let Err(e) = part.write(&bytes) {
                    parts.remove(&id);
                    failed.insert(id);
                    answer(Outcome::Failed {
                        id,
                        why: Failure::of(&e),
                    });
                }
            }
            Job::Finish { id } => {
                let Some(part) = parts.remove(&id) else {
                    failed.remove(&id);
                    continue;
                };
                answer(match part.finish() {
                    Ok(stored) => Outcome::Stored { id, stored },
                    Err(e) => Outcome::Failed {
                        id,
                        why: Failure::of(&e),
                    },
                });
            }
            Job::Abort { id } => {
                parts.remove(&id);
                failed.remove(&id);
            }
        }
    }
}

/// Puts the calling thread at nice 10: hashing and copying a big upload
/// takes whole seconds of CPU, and on a small machine that must not delay
/// the event loop (the chat) by a scheduler slice. The loop waits for
/// this thread only through its queue, which back-pressure covers.
pub(crate) fn below_the_loop() {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS
    // and a thread id changes only that thread's nice value.
    #[cfg(target_os = "linux")]
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) != 0 {
            log::debug!("files thread: setpriority failed");
        }
    }
}

/// Up to `len` bytes of `file` from `offset` (fewer only at its end).
fn read_at(file: &File, offset: u64, len: usize, mut bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    bytes.clear();
    bytes.resize(len, 0);
    let mut got = 0;
    while got < len {
        match file.read_at(&mut bytes[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(got);
    Ok(bytes)
}

/// Makes `dir` (0700) if it is missing; an existing one is tightened to
/// 0700.
fn make_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// A hash from its 64 hex digits.
fn unhex(text: &str) -> Option<Sha> {
    if text.len() != 64 {
        return None;
    }
    let mut sha = [0u8; 32];
    for (i, byte) in sha.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(sha)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&dir.path().join("chat.db")).unwrap();
        (dir, blobs)
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_upload_lands_under_its_hash_in_a_private_directory() {
        let (dir, blobs) = store();
        assert_eq!(mode(&dir.path().join("files")), 0o700);
        let mut part = blobs.begin("slot1", 11).unwrap();
        part.write(b"hello ").unwrap();
        part.write(b"world").unwrap();
        let stored = part.finish().unwrap();
        assert_eq!(stored.size, 11);
        // sha256("hello world")
        assert_eq!(
            hex(&stored.sha),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let path = blobs.path_of(&stored.sha);
        assert!(path.starts_with(dir.path().join("files").join("b9")));
        assert_eq!(fs::read(&path).unwrap(), b"hello world");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            fs::read_dir(blobs.tmp()).unwrap().count(),
            0,
            "no temporary file left"
        );
    }

    #[test]
    fn a_wrong_length_stores_nothing() {
        let (_dir, blobs) = store();
        let mut part = blobs.begin("short", 10).unwrap();
        part.write(b"12345").unwrap();
        assert!(part.finish().is_err());
        let mut part = blobs.begin("long", 3).unwrap();
        assert!(part.write(b"1234").is_err());
        assert_eq!(part.written(), 0);
        drop(part);
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 0);
        let stored_dirs = fs::read_dir(&blobs.dir).unwrap().count();
        assert_eq!(stored_dirs, 1, "only tmp/: nothing was stored");
    }

    #[test]
    fn an_upload_cut_short_removes_its_temporary_file() {
        let (_dir, blobs) = store();
        let mut part = blobs.begin("cut", 1000).unwrap();
        part.write(&[7u8; 500]).unwrap();
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 1);
        drop(part);
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 0);
    }

    /// Bytes that differ at every offset (a pattern of period 251, prime,
    /// so that no block repeats another).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Whether this temporary directory's file system takes `O_DIRECT`.
    fn takes_direct(blobs: &Blobs) -> bool {
        let probe = blobs.tmp().join("probe");
        let file = File::create(&probe).unwrap();
        let direct = set_direct(&file, true);
        fs::remove_file(&probe).unwrap();
        direct
    }

    #[test]
    fn a_big_upload_written_around_the_cache_lands_whole() {
        let (_dir, blobs) = store();
        // Not a whole number of buffers or blocks: the tail goes through
        // the cache.
        let len = DIRECT_FROM as usize + DIRECT_BUF + 12_345;
        let bytes = pattern(len);
        let mut part = blobs.begin("big", len as u64).unwrap();
        assert_eq!(part.direct.is_some(), takes_direct(&blobs));
        // Chunks of an odd size, so that no buffer fills on a chunk's end.
        for chunk in bytes.chunks(100_003) {
            part.write(chunk).unwrap();
        }
        assert_eq!(part.written(), len as u64);
        let stored = part.finish().unwrap();
        assert_eq!(stored.size, len as u64);
        assert_eq!(
            stored.sha.as_slice(),
            ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()
        );
        assert!(fs::read(blobs.path_of(&stored.sha)).unwrap() == bytes);
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 0);
    }

    #[test]
    fn a_big_upload_cut_short_removes_its_temporary_file() {
        let (_dir, blobs) = store();
        let mut part = blobs.begin("cut", DIRECT_FROM * 2).unwrap();
        part.write(&pattern(DIRECT_BUF * 3 + 5)).unwrap();
        drop(part);
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 0);
    }

    #[test]
    fn direct_reads_give_any_range_of_a_big_file() {
        let (_dir, blobs) = store();
        let len = DIRECT_FROM as usize + 777;
        let bytes = pattern(len);
        let mut part = blobs.begin("read", len as u64).unwrap();
        part.write(&bytes).unwrap();
        let stored = part.finish().unwrap();
        let file = blobs.open_blob(&stored.sha).unwrap();
        assert_eq!(set_direct(&file, true), takes_direct(&blobs));
        let mut buf = ReadBuf::new();
        let piece = READ_PIECE;
        // (offset, bytes asked for, bytes there)
        for (offset, ask, want) in [
            (0, piece, piece),
            (4095, piece, piece),
            (4097, 10, 10),
            (len as u64 - 100, piece, 100),
            (len as u64 - 5000, 4096, 4096),
            (len as u64 - 5000, piece, 5000),
            (len as u64, piece, 0),
            (len as u64 + 4096, piece, 0),
        ] {
            let got = buf.read_at(&file, offset, ask, vec![9; 3]).unwrap();
            assert_eq!(got.len(), want, "at {offset}");
            let at = offset as usize;
            assert!(
                got[..] == bytes[at.min(len)..(at + got.len()).min(len)],
                "at {offset}"
            );
        }
        // The vector handed in is filled, not replaced.
        let mut into = Vec::with_capacity(piece);
        into.push(1);
        let at = into.as_ptr();
        let got = buf.read_at(&file, 4095, piece, into).unwrap();
        assert_eq!(got.as_ptr(), at);
        assert!(got[..] == bytes[4095..4095 + piece]);
        // A piece bigger than the buffer is read through the cache.
        let got = buf.read_at(&file, 3, 3 * piece, Vec::new()).unwrap();
        assert!(got[..] == bytes[3..3 + 3 * piece]);
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_at_start() {
        let (dir, blobs) = store();
        let part = blobs.begin("crash", 5).unwrap();
        std::mem::forget(part);
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 1);
        let again = Blobs::open(&dir.path().join("chat.db")).unwrap();
        assert_eq!(fs::read_dir(again.tmp()).unwrap().count(), 0);
    }

    #[test]
    fn the_same_bytes_are_stored_once() {
        let (_dir, blobs) = store();
        let mut a = blobs.begin("a", 3).unwrap();
        a.write(b"abc").unwrap();
        let a = a.finish().unwrap();
        let mut b = blobs.begin("b", 3).unwrap();
        b.write(b"abc").unwrap();
        let b = b.finish().unwrap();
        assert_eq!(a, b);
        assert_eq!(fs::read(blobs.path_of(&a.sha)).unwrap(), b"abc");
        assert_eq!(blobs.all().unwrap(), [a.sha]);
        assert_eq!(unhex(&hex(&a.sha)), Some(a.sha));
        blobs.remove(&a.sha).unwrap();
        blobs.remove(&a.sha).unwrap();
        assert!(blobs.all().unwrap().is_empty());
        assert!(blobs.open_blob(&a.sha).is_err());
    }

    #[test]
    fn slot_names_cannot_leave_the_directory() {
        let (_dir, blobs) = store();
        for bad in ["", "../x", "a/b", "a\\b", "a\0b", ".", "..", "a.b"] {
            assert!(blobs.begin(bad, 1).is_err(), "{bad:?}");
        }
        let _used = blobs.begin("twice", 1).unwrap();
        assert!(blobs.begin("twice", 1).is_err(), "a slot is written once");
    }

    #[test]
    fn only_plain_images_are_inline_and_the_name_does_not_matter() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            Kind::detect(png),
            Kind {
                mime: "image/png",
                inline: true
            }
        );
        assert!(Kind::detect(b"\xff\xd8\xff\xe0\0\x10JFIF\0").inline);
        assert!(Kind::detect(b"GIF89a\x01\0\x01\0").inline);
        assert!(Kind::detect(b"RIFF\x1a\0\0\0WEBPVP8 ").inline);
        for attachment in [
            &b"<!DOCTYPE html><html><script>alert(1)</script>"[..],
            b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            b"<svg onload=alert(1)>",
            b"%PDF-1.7\n",
            b"plain text",
            b"",
        ] {
            assert!(!Kind::detect(attachment).inline, "{attachment:?}");
        }
        assert_eq!(Kind::detect(b"%PDF-1.7\n").mime, "application/pdf");
    }

    fn writer(blobs: &Blobs) -> (Writer, Arc<std::sync::atomic::AtomicUsize>) {
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        let wake = Arc::new(move || {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        (Writer::start(blobs.clone(), 16, wake).unwrap(), woken)
    }

    fn next(w: &Writer) -> Outcome {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(o) = w.try_recv() {
                return o;
            }
            assert!(std::time::Instant::now() < deadline, "no outcome");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn send(w: &Writer, mut job: Job) {
        loop {
            match w.try_send(job) {
                Ok(()) => return,
                Err(back) => {
                    job = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    fn begin(w: &Writer, id: UploadId, slot: &str, expected: u64) {
        let slot = slot.into();
        send(w, Job::Begin { id, slot, expected });
    }

    fn chunk(w: &Writer, id: UploadId, bytes: &[u8]) {
        let bytes = bytes.to_vec();
        send(w, Job::Chunk { id, bytes });
    }

    #[test]
    fn the_writer_stores_an_upload_sent_in_chunks_and_wakes_the_loop() {
        let (_dir, blobs) = store();
        let (w, woken) = writer(&blobs);
        begin(&w, 7, "s7", 100_000);
        for _ in 0..10 {
            chunk(&w, 7, &[b'x'; 10_000]);
        }
        send(&w, Job::Finish { id: 7 });
        let Outcome::Stored { id, stored } = next(&w) else {
            panic!("not stored");
        };
        assert_eq!((id, stored.size), (7, 100_000));
        assert_eq!(
            fs::read(blobs.path_of(&stored.sha)).unwrap(),
            vec![b'x'; 100_000]
        );
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wrong_length_is_answered_once_and_an_abort_not_at_all() {
        let (_dir, blobs) = store();
        let (w, _) = writer(&blobs);
        begin(&w, 1, "long", 3);
        chunk(&w, 1, b"abcd");
        chunk(&w, 1, b"more");
        send(&w, Job::Finish { id: 1 });
        begin(&w, 2, "short", 10);
        chunk(&w, 2, b"abc");
        send(&w, Job::Finish { id: 2 });
        begin(&w, 3, "gone", 10);
        chunk(&w, 3, b"abc");
        send(&w, Job::Abort { id: 3 });
        begin(&w, 4, "../x", 1);
        assert_eq!(
            next(&w),
            Outcome::Failed {
                id: 1,
                why: Failure::WrongLength
            }
        );
        assert_eq!(
            next(&w),
            Outcome::Failed {
                id: 2,
                why: Failure::WrongLength
            }
        );
        assert!(matches!(
            next(&w),
            Outcome::Failed {
                id: 4,
                why: Failure::Io(_)
            }
        ));
        drop(w);
        assert_eq!(
            fs::read_dir(blobs.tmp()).unwrap().count(),
            0,
            "nothing left behind"
        );
        assert_eq!(
            fs::read_dir(&blobs.dir).unwrap().count(),
            1,
            "nothing stored"
        );
    }

    #[test]
    fn downloads_are_read_in_pieces_and_a_full_queue_wakes_the_loop_later() {
        let (_dir, blobs) = store();
        let mut part = blobs.begin("r", 10).unwrap();
        part.write(b"0123456789").unwrap();
        let sha = part.finish().unwrap().sha;
        let (w, _) = writer(&blobs);
        // The vector handed in is reused, whatever it held.
        let read = |offset, len| Job::Read {
            id: 9,
            sha,
            offset,
            len,
            buf: b"old bytes".to_vec(),
        };
        send(&w, read(2, 5));
        assert_eq!(
            next(&w),
            Outcome::Data {
                id: 9,
                bytes: b"23456".to_vec()
            }
        );
        send(&w, read(7, 5));
        assert_eq!(
            next(&w),
            Outcome::Data {
                id: 9,
                bytes: b"789".to_vec()
            }
        );
        // The vector handed in is the one that comes back, filled.
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"last piece");
        let at = buf.as_ptr();
        send(
            &w,
            Job::Read {
                id: 9,
                sha,
                offset: 1,
                len: 4,
                buf,
            },
        );
        match next(&w) {
            Outcome::Data { id: 9, bytes } => {
                assert_eq!(bytes, b"1234");
                assert_eq!(bytes.as_ptr(), at, "no new allocation");
            }
            other => panic!("{other:?}"),
        }
        send(&w, Job::Close { id: 9 });
        send(
            &w,
            Job::Read {
                id: 10,
                sha: [0; 32],
                offset: 0,
                len: 1,
                buf: Vec::new(),
            },
        );
        assert!(matches!(next(&w), Outcome::Failed { id: 10, .. }));
        // A queue found full sets the flag; the thread's next job clears it
        // with a wake.
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = woken.clone();
        let tiny = Writer::start(
            blobs.clone(),
            1,
            Arc::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        let mut refused = false;
        for i in 0..1000 {
            if tiny.try_send(Job::Close { id: i }).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a queue of one fills");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while woken.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "never woken");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn uploads_left_unfinished_at_shutdown_leave_nothing() {
        let (_dir, blobs) = store();
        let (w, _) = writer(&blobs);
        begin(&w, 1, "open", 10);
        chunk(&w, 1, b"abc");
        drop(w);
        assert_eq!(fs::read_dir(blobs.tmp()).unwrap().count(), 0);
    }
}
