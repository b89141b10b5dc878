//! The `files` scenario: one big upload and its download over loopback
//! (TLS with `--tls`), while a chat pair talks, as the `logins` scenario's
//! pair does. Reports each direction's throughput, the server's resident
//! memory before and at its highest during the transfer (with its pid),
//! and the pair's latency before and during it.
//!
//! The uploader logs in on a blocking line connection of its own, asks
//! `/upload`, and `PUT`s the body from one buffer of random bytes (never
//! the file in memory); the download reads and drops the body. Both run
//! on a thread below the pair's priority, so that on a small machine the
//! generator's own TLS work does not take the CPU the pair's timing needs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{
    Common, Error, Net, Percentiles, RssPeak, StormClock, Target, fail, join_all, join_pair,
    lower_priority, names, quiet_for, start_pair, tls_config,
};

/// Options of the `files` scenario.
#[derive(Clone, Debug)]
pub struct FilesOpts {
    /// Bytes of the file.
    pub size: u64,
    /// Messages per second of the chat pair.
    pub pair_rate: f64,
    /// How long the pair is measured before the transfer.
    pub quiet: Duration,
    /// The server's process id, for its memory.
    pub pid: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct FilesReport {
    pub target: String,
    pub size: u64,
    pub upload_secs: f64,
    pub download_secs: f64,
    /// The server's resident memory before the transfer, and its highest
    /// during it (KiB), if its pid was given.
    pub rss_before_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub quiet: Percentiles,
    pub during: Percentiles,
    /// `during` until the upload was answered, and after: the download.
    pub upload: Percentiles,
    pub download: Percentiles,
}

impl FilesReport {
    pub fn upload_mb_per_sec(&self) -> f64 {
        self.size as f64 / self.upload_secs / 1e6
    }

    pub fn download_mb_per_sec(&self) -> f64 {
        self.size as f64 / self.download_secs / 1e6
    }

    pub fn json(&self) -> super::Json {
        let mut j = super::Json::new()
            .str("scenario", "files")
            .str("target", &self.target)
            .num("bytes", self.size as f64)
            .num("upload_secs", self.upload_secs)
            .num("download_secs", self.download_secs)
            .num("upload_mb_per_sec", self.upload_mb_per_sec())
            .num("download_mb_per_sec", self.download_mb_per_sec());
        if let (Some(before), Some(peak)) = (self.rss_before_kib, self.rss_peak_kib) {
            j = j
                .num("rss_before_kib", before as f64)
                .num("rss_peak_kib", peak as f64);
        }
        j.percentiles("quiet", &self.quiet)
            .percentiles("during", &self.during)
            .percentiles("upload", &self.upload)
            .percentiles("download", &self.download)
    }
}

/// See the module documentation.
pub fn files(c: &Common, o: &FilesOpts) -> Result<FilesReport, Error> {
    let Target::NeoChat(addr) = c.target else {
        return fail("the files scenario is for NeoChat targets only");
    };
    let uploader = names(&c.prefix, "u", 1).remove(0);
    // The uploader's account exists (and is in the room) before anything
    // is timed.
    {
        let mut setup = Net::new()?;
        join_all(
            &mut setup,
            c,
            std::slice::from_ref(&uploader),
            super::How::LOBBY,
            "uploader",
        )?;
    }
    // Ten minutes for a gigabyte each way, whatever the machine.
    let limit = o.quiet + c.setup_timeout + Duration::from_secs(600);
    let (clock, pair_thread) = start_pair(c, o.pair_rate, limit)?;
    let transfer = (|| {
        if !quiet_for(&clock, &pair_thread, o.quiet) {
            return Ok(None);
        }
        let rss = RssPeak::start(o.pid)?;
        let from = clock.epoch.elapsed().as_nanos() as u64;
        clock.from.store(from, Ordering::SeqCst);
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    lower_priority();
                    transfer(c, addr, &uploader, o.size, &clock)
                })
                .join()
                .unwrap_or_else(|_| fail("the transfer's thread panicked"))
        });
        clock
            .to
            .store(clock.epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
        let (rss_before, rss_peak) = rss.stop();
        let (up, down) = result?;
        Ok::<_, Error>(Some((up, down, rss_before, rss_peak)))
    })();
    let ((upload_secs, download_secs, rss_before_kib, rss_peak_kib), times) =
        join_pair(&clock, pair_thread, transfer, "the transfer")?;
    Ok(FilesReport {
        target: c.target.to_string(),
        size: o.size,
        upload_secs,
        download_secs,
        rss_before_kib,
        rss_peak_kib,
        quiet: Percentiles::of(&times.quiet),
        during: Percentiles::of(&times.busy),
        upload: Percentiles::of(&times.early),
        download: Percentiles::of(&times.late),
    })
}

/// A blocking stream to the server, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn open(c: &Common, addr: std::net::SocketAddr, http: bool) -> Result<Stream, Error> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        if !c.tls {
            return Ok(Stream::Plain(tcp));
        }
        let mut config = (*tls_config()).clone();
        if http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| Error(format!("TLS: {e}")))?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Logs `user` in, asks for a slot, uploads `size` bytes, downloads them
/// back: the seconds each direction took. The clock's `mid` is set where
/// the download begins.
fn transfer(
    c: &Common,
    addr: std::net::SocketAddr,
    user: &str,
    size: u64,
    clock: &StormClock,
) -> Result<(f64, f64), Error> {
    let mut chat = BufReader::new(Stream::open(c, addr, false)?);
    write!(chat.get_mut(), "L\n{user}\n{}\n", c.password)?;
    chat.get_mut().flush()?;
    let mut line = String::new();
    let read_line = |chat: &mut BufReader<Stream>, line: &mut String| -> Result<(), Error> {
        line.clear();
        if chat.read_line(line)? == 0 {
            return fail(format!("{user}: closed by the server"));
        }
        Ok(())
    };
    loop {
        read_line(&mut chat, &mut line)?;
        if line.starts_with("* logged in as") {
            break;
        }
        if line.starts_with('!') {
            return fail(format!("{user}: {}", line.trim_end()));
        }
    }
    writeln!(chat.get_mut(), "/upload bench.bin {size}")?;
    chat.get_mut().flush()?;
    let slot_url = loop {
        read_line(&mut chat, &mut line)?;
        if let Some(url) = line.strip_prefix("* upload ") {
            break url.trim().to_owned();
        }
        if line.starts_with("! ") {
            return fail(format!("/upload: {}", line.trim_end()));
        }
    };
    let path = path_of(&slot_url)?;
    // Random bytes, so that nothing along the way can do less work for
    // repeated ones.
    let mut block = vec![0u8; 1 << 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut block)
        .map_err(|_| Error("no randomness for the file".into()))?;
    let started = Instant::now();
    let mut up = Stream::open(c, addr, true)?;
    write!(
        up,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {size}\r\n\r\n"
    )?;
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(block.len(), |l| l.min(block.len()));
        up.write_all(&block[..n])?;
        left -= n as u64;
    }
    up.flush()?;
    let (status, body) = response(&mut up)?;
    let upload_secs = started.elapsed().as_secs_f64();
    if status != 201 {
        return fail(format!("PUT answered {status}"));
    }
    let file_url = String::from_utf8_lossy(&body).trim().to_owned();
    let file_path = path_of(&file_url)?;
    clock
        .mid
        .store(clock.epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
    let started = Instant::now();
    let mut down = Stream::open(c, addr, true)?;
    write!(down, "GET {file_path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    down.flush()?;
    let got = drain_response(&mut down)?;
    let download_secs = started.elapsed().as_secs_f64();
    if got != size {
        return fail(format!("the download had {got} bytes, not {size}"));
    }
    Ok((upload_secs, download_secs))
}

/// `/files/...` of a URL.
fn path_of(url: &str) -> Result<String, Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| Error(format!("not a URL: {url}")))?;
    let at = rest
        .find('/')
        .ok_or_else(|| Error(format!("no path in {url}")))?;
    Ok(rest[at..].to_owned())
}

/// Reads a response head; the status and the `Content-Length`.
fn head(s: &mut impl Read) -> Result<(u16, u64, Vec<u8>), Error> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return fail("the server closed before its answer");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status == 100 {
                buf.drain(..end + 4);
                continue;
            }
            let length = text
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            return Ok((status, length, buf[end + 4..].to_vec()));
        }
        if buf.len() > 16 * 1024 {
            return fail("an answer's head over 16 KiB");
        }
    }
}

fn response(s: &mut impl Read) -> Result<(u16, Vec<u8>), Error> {
    let (status, length, mut body) = head(s)?;
    let mut chunk = [0u8; 4096];
    while (body.len() as u64) < length {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((status, body))
}

/// Reads a response's body to its end, keeping none of it: its length.
fn drain_response(s: &mut impl Read) -> Result<u64, Error> {
    let (status, length, first) = head(s)?;
    if status != 200 {
        return fail(format!("GET answered {status}"));
    }
    let mut got = first.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    while got < length {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            // The server ends a download with close_notify, or just FIN.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok(got)
}
