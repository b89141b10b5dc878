//! The pin store: `known_servers`, the certificates a person chose to trust
//! for servers that no certificate authority vouches for, like OpenSSH's
//! `known_hosts`.
//!
//! Owns the client's directory (`$XDG_CONFIG_HOME/neochat`, else
//! `$HOME/.config/neochat`) and the file's place in it (`known_servers`),
//! its format (one
//! `HOST:PORT SHA256:...` line per server; blank lines and `#` comments
//! allowed), reading it without ever failing on a bad line (a warning
//! instead), and adding a pin atomically (temporary file, then rename;
//! directory 0700, file 0600). It also owns [`Fingerprint`], the
//! `SHA256:...` text form the server prints too. Deciding whether to trust
//! a server is `trust.rs`'s job; nothing here talks to the terminal.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// The SHA-256 digest of a certificate's DER, shown as `SHA256:` and the
/// digest in standard base64 without padding (as OpenSSH prints keys, and
/// as `neochat-server fingerprint` prints its certificate).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a certificate given as DER.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

/// Reads `SHA256:` + base64 of 32 bytes (padding tolerated). The error is
/// a phrase for the user; also used as clap's parser for `--fingerprint`.
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    let bad = || {
        format!(
            "expected SHA256: and 43 base64 characters (as `neochat-server fingerprint` prints it), got `{text}`"
        )
    };
    let b64 = text.trim().strip_prefix("SHA256:").ok_or_else(bad)?;
    let bytes = match STANDARD_NO_PAD.decode(b64) {
        Ok(bytes) => bytes,
        Err(_) => STANDARD.decode(b64).map_err(|_| bad())?,
    };
    let digest: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    Ok(Fingerprint(digest))
}

/// The name a server is pinned under: `HOST:PORT` with the host in
/// lowercase and an IP address in its usual form (`[::1]:59000`), so that
/// one server typed two ways is one entry. `addr` is already checked by
/// `wire::parse_addr`.
pub fn server_key(addr: &str) -> String {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return addr.to_ascii_lowercase();
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Ok(IpAddr::V4(ip)) => format!("{ip}:{port}"),
        Err(_) => format!("{}:{port}", host.to_ascii_lowercase()),
    }
}

/// Where the pins live: `known_servers` in [`config_dir`].
pub fn default_path() -> Option<PathBuf> {
    Some(config_dir()?.join("known_servers"))
}

/// The client's directory, from the environment: `neochat` in
/// `$XDG_CONFIG_HOME` when it is an absolute path (the XDG rule: a
/// relative one is ignored), else in `$HOME/.config`. `None` when neither
/// is usable. The login tokens live there too (`tokens.rs`).
pub fn config_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base =
        absolute("XDG_CONFIG_HOME").or_else(|| absolute("HOME").map(|h| h.join(".config")))?;
    Some(base.join("neochat"))
}

/// One valid line of the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Pin {
    pub server: String,
    pub fingerprint: Fingerprint,
    /// 1-based, for messages that tell which line to remove.
    pub line: usize,
}

/// The file as read: its lines kept byte for byte (a line this version
/// does not understand survives a rewrite), and the pins found in it.
#[derive(Debug)]
pub struct Known {
    path: PathBuf,
    raw: Vec<u8>,
    pins: Vec<Pin>,
}

/// Reads the file's text. A missing file is an empty store; a line that is
/// not `HOST:PORT SHA256:...` is skipped, with a warning in the returned
/// list. Fails only when the file exists and cannot be read.
pub fn load(path: &Path) -> io::Result<(Known, Vec<String>)> {
    let raw = match fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let (pins, warnings) = parse(&raw, path);
    Ok((
        Known {
            path: path.to_owned(),
            raw,
            pins,
        },
        warnings,
    ))
}

fn parse(raw: &[u8], path: &Path) -> (Vec<Pin>, Vec<String>) {
    let mut pins = Vec::new();
    let mut warnings = Vec::new();
    for (i, bytes) in raw.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.trim(),
            Err(_) => {
                warnings.push(format!(
                    "{}:{number}: not UTF-8; line ignored",
                    path.display()
                ));
                continue;
            }
        };
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let mut words = text.split_whitespace();
        let (Some(server), Some(fp), None) = (words.next(), words.next(), words.next()) else {
            warnings.push(format!(
                "{}:{number}: expected `HOST:PORT SHA256:...`; line ignored",
                path.display()
            ));
            continue;
        };
        let fingerprint = match (crate::wire::parse_addr(server), parse_fingerprint(fp)) {
            (Ok(_), Ok(fingerprint)) => fingerprint,
            (Err(_), _) => {
                warnings.push(format!(
                    "{}:{number}: `{}` is not HOST:PORT; line ignored",
                    path.display(),
                    crate::display::sanitize(server.as_bytes())
                ));
                continue;
            }
            (_, Err(_)) => {
                warnings.push(format!(
                    "{}:{number}: bad fingerprint; line ignored",
                    path.display()
                ));
                continue;
            }
        };
        pins.push(Pin {
            server: server_key(server),
            fingerprint,
            line: number,
        });
    }
    (pins, warnings)
}

impl Known {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pins recorded for `server` (a [`server_key`]), in file order.
    pub fn pins_for<'a>(&'a self, server: &'a str) -> impl Iterator<Item = &'a Pin> + 'a {
        self.pins.iter().filter(move |p| p.server == server)
    }

    /// Adds a pin and writes the file again: every existing line as it was,
    /// then the new one. Atomic: a temporary file beside it (mode 0600),
    /// synced, then renamed over it; the directory is created 0700 if
    /// missing.
    pub fn add(&mut self, server: &str, fingerprint: Fingerprint) -> io::Result<()> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| io::Error::other("the pin file has no directory"))?;
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;

        let mut text = self.raw.clone();
        if !text.is_empty() && text.last() != Some(&b'\n') {
            text.push(b'\n');
        }
        let line = format!("{server} {fingerprint}\n");
        text.extend_from_slice(line.as_bytes());

        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::other("the pin file has no name"))?;
        let mut tmp_name = name.to_owned();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let written = write_new(&tmp, &text).and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable; failing that is not worth an error.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }

        self.pins.push(Pin {
            server: server.to_owned(),
            fingerprint,
            line: text.iter().filter(|&&b| b == b'\n').count(),
        });
        self.raw = text;
        Ok(())
    }
}

/// Writes `text` to a new file of mode 0600 and syncs it. A leftover file
/// of a crashed run with the same name is replaced.
fn write_new(path: &Path, text: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const EMPTY: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    #[test]
    fn fingerprint_format_matches_openssh_style() {
        let fp = Fingerprint::of_der(b"");
        assert_eq!(fp.to_string(), EMPTY);
        assert_eq!(parse_fingerprint(EMPTY), Ok(fp));
        // Padding and surrounding spaces are tolerated.
        assert_eq!(parse_fingerprint(&format!(" {EMPTY}= ")), Ok(fp));
        for bad in [
            "",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "SHA256:",
            "SHA256:47DEQpj8HBSa",
            "SHA256:!!!!",
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFUAAAA",
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_keys_are_normalized() {
        assert_eq!(
            server_key("Chat.Example.ORG:59000"),
            "chat.example.org:59000"
        );
        assert_eq!(server_key("[0:0::1]:1"), "[::1]:1");
        assert_eq!(server_key("127.0.0.1:59000"), "127.0.0.1:59000");
    }

    #[test]
    fn bad_lines_are_warnings_not_failures() {
        let mut raw = format!(
            "# comment\n\nexample.org:1 {EMPTY}\ngarbage\nhost:99999 {EMPTY}\n\
             other:2 SHA256:nope\n"
        )
        .into_bytes();
        raw.extend_from_slice(b"\xff\xfe\n");
        raw.extend_from_slice(format!("EXAMPLE.org:1   {EMPTY}  \na:1 {EMPTY} extra").as_bytes());
        let (pins, warnings) = parse(&raw, Path::new("k"));
        let lines: Vec<usize> = pins.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 8]);
        assert!(pins.iter().all(|p| p.server == "example.org:1"));
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(warnings[0].starts_with("k:4:"), "{warnings:?}");
    }

    #[test]
    fn add_is_atomic_private_and_keeps_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg").join("neochat").join("known_servers");
        let (mut known, warnings) = load(&path).unwrap();
        assert!(warnings.is_empty());
        let fp = Fingerprint::of_der(b"cert");
        known.add("a:1", fp).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("a:1 {fp}\n"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // A line it does not understand survives, and no temp file is left.
        fs::write(&path, format!("a:1 {fp}\nnonsense")).unwrap();
        let (mut known, warnings) = load(&path).unwrap();
        assert_eq!(warnings.len(), 1);
        let other = Fingerprint::of_der(b"other");
        known.add("b:2", other).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("a:1 {fp}\nnonsense\nb:2 {other}\n")
        );
        let (known, _) = load(&path).unwrap();
        let b: Vec<&Pin> = known.pins_for("b:2").collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].line, 3);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
