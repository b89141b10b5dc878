//! The `Range` header of a download (RFC 9110, section 14): which bytes of
//! a file of a known size a client asks for, so that a download cut short
//! can resume.
//!
//! One range is served (`206`); a header that asks for several, uses
//! another unit or is malformed is ignored and the whole file is served
//! (`200`), as the RFC allows. A range that starts past the end cannot be
//! satisfied (`416`). No I/O: a header and a size in, a range out.

/// A range that cannot be served: `416 Range Not Satisfiable`, with
/// `Content-Range: bytes */<size>`.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// The bytes `first..=last` of a file of `size` bytes that `header` (the
/// value of `Range`) asks for; `None` for the whole file.
pub fn byte_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((from, to)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // More digits than a u64 holds: past any file's end.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (from.trim(), to.trim()) {
        // The last `n` bytes.
        ("", n) => {
            let Some(n) = number(n) else {
                return Ok(None);
            };
            if n == 0 || size == 0 {
                return Err(Unsatisfiable);
            }
            Ok(Some((size - n.min(size), size - 1)))
        }
        (first, last) => {
            let Some(first) = number(first) else {
                return Ok(None);
            };
            let last = match last {
                "" => u64::MAX,
                last => match number(last) {
                    Some(last) if last >= first => last,
                    _ => return Ok(None),
                },
            };
            if first >= size {
                return Err(Unsatisfiable);
            }
            Ok(Some((first, last.min(size - 1))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_in_each_form() {
        assert_eq!(byte_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(byte_range("bytes=500-", 1000), Ok(Some((500, 999))));
        assert_eq!(byte_range("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(byte_range("bytes=-5000", 1000), Ok(Some((0, 999))));
        assert_eq!(byte_range("bytes=900-5000", 1000), Ok(Some((900, 999))));
        assert_eq!(byte_range(" bytes=0-0 ", 1), Ok(Some((0, 0))));
    }

    #[test]
    fn past_the_end_cannot_be_satisfied() {
        assert_eq!(byte_range("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(byte_range("bytes=1000-2000", 1000), Err(Unsatisfiable));
        assert_eq!(byte_range("bytes=-0", 1000), Err(Unsatisfiable));
        assert_eq!(byte_range("bytes=0-", 0), Err(Unsatisfiable));
        assert_eq!(byte_range("bytes=-1", 0), Err(Unsatisfiable));
        assert_eq!(
            byte_range("bytes=99999999999999999999999-", 10),
            Err(Unsatisfiable)
        );
    }

    #[test]
    fn anything_else_is_ignored_and_the_whole_file_served() {
        for header in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=abc-",
            "bytes=5-1",
            "bytes=+1-2",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes 0-1",
            "bytes=1-2-3",
            "bytes=0x10-",
        ] {
            assert_eq!(byte_range(header, 1000), Ok(None), "{header:?}");
        }
    }
}
