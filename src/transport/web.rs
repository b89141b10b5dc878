//! The web client: the files of `web/`, embedded in the binary at build
//! time and served from memory (no file is read at run time, so the page
//! is the one the binary was built with).
//!
//! The page refers to its script and style as `/app.js?v=<digest>`: those
//! URLs change whenever the file does, so the browser may keep them for a
//! year (`immutable`) and a reload fetches only the page itself. The page,
//! and any file asked for without the current digest, is `no-cache` with
//! an `ETag`, so a browser's revalidation is a `304` with no body.

use std::sync::OnceLock;

use super::http::{PAGE_CSP, Request, head, respond_with};

/// One file of the web client.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    body: &'static [u8],
}

/// The files as they are in `web/`; `index.html` is served at `/`.
const FILES: [Asset; 6] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "/boot.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/boot.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/style.css"),
    },
    Asset {
        path: "/manifest.webmanifest",
        content_type: "application/manifest+json",
        body: include_bytes!("../../web/manifest.webmanifest"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/icon.svg"),
    },
];

/// The files with their served bodies and digests, made once.
struct Built {
    bodies: Vec<Vec<u8>>,
    /// Hex digest (64 bits of SHA-256) of each served body.
    digests: Vec<String>,
}

fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut bodies: Vec<Vec<u8>> = FILES.iter().map(|f| f.body.to_vec()).collect();
        let mut digests: Vec<String> = bodies.iter().map(|b| digest(b)).collect();
        // The page names the others by versioned URL: `"/app.js"` becomes
        // `"/app.js?v=<digest>"` wherever it is quoted.
        let mut page = String::from_utf8_lossy(&bodies[0]).into_owned();
        for (i, file) in FILES.iter().enumerate().skip(1) {
            page = page.replace(
                &format!("\"{}\"", file.path),
                &format!("\"{}?v={}\"", file.path, digests[i]),
            );
        }
        digests[0] = digest(page.as_bytes());
        bodies[0] = page.into_bytes();
        Built { bodies, digests }
    })
}

/// The file served at `path` (without its query), if there is one.
pub fn find(path: &str) -> Option<usize> {
    FILES.iter().position(|f| f.path == path)
}

/// The answer to a `GET` (or `HEAD`: the caller cuts the body) of file
/// `index`.
pub fn serve(index: usize, request: &Request, tls: bool) -> Vec<u8> {
    let built = built();
    let digest = &built.digests[index];
    let etag = format!("\"{digest}\"");
    let versioned = request
        .path
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|kv| kv == format!("v={digest}")));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = [
        ("Cache-Control", cache),
        ("ETag", etag.as_str()),
        ("Content-Security-Policy", PAGE_CSP),
    ];
    let fresh = request.if_none_match.as_deref().is_some_and(|tags| {
        tags.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
    });
    if fresh {
        return head(304, "Not Modified", &headers, tls);
    }
    respond_with(
        200,
        "OK",
        &headers,
        FILES[index].content_type,
        &built.bodies[index],
        tls,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget for the page: HTML, CSS and script together,
    /// as served (the manifest and icon counted too).
    #[test]
    fn the_page_is_at_most_100_kb() {
        let size: usize = built().bodies.iter().map(Vec::len).sum();
        assert!(size <= 100_000, "the web client is {size} bytes");
    }

    #[test]
    fn the_page_names_its_files_by_digest() {
        let built = built();
        let page = String::from_utf8_lossy(&built.bodies[0]);
        for (i, file) in FILES.iter().enumerate().skip(1) {
            let versioned = format!("\"{}?v={}\"", file.path, built.digests[i]);
            assert!(
                page.contains(&versioned) || file.path == "/icon.svg",
                "{versioned} not in the page"
            );
        }
        assert!(!page.contains("<script>"), "no inline script");
        assert!(!page.contains(" style="), "no inline style");
    }

    /// Text from other users reaches the page only as text: the script
    /// has no way to parse HTML or run strings as code.
    #[test]
    fn the_script_never_parses_html_or_evaluates_strings() {
        let script: Vec<u8> = FILES
            .iter()
            .filter(|f| f.path.ends_with(".js"))
            .flat_map(|f| f.body.iter().copied())
            .collect();
        let script = String::from_utf8_lossy(&script);
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout(\"",
            "DOMParser",
            "createContextualFragment",
        ] {
            assert!(
                !script.contains(banned),
                "the web client's script uses {banned}"
            );
        }
    }

    fn get(path: &str, if_none_match: Option<&str>) -> String {
        let request = Request {
            method: "GET".into(),
            path: path.into(),
            if_none_match: if_none_match.map(str::to_owned),
            ..Request::default()
        };
        let index = find(path.split('?').next().unwrap_or_default()).expect("a file");
        String::from_utf8_lossy(&serve(index, &request, true)).into_owned()
    }

    #[test]
    fn versioned_files_are_kept_and_others_revalidated() {
        let digest = &built().digests[1];
        let kept = get(&format!("/app.js?v={digest}"), None);
        assert!(kept.starts_with("HTTP/1.1 200 OK\r\n"), "{kept}");
        assert!(kept.contains("Cache-Control: public, max-age=31536000, immutable\r\n"));
        let stale = get("/app.js?v=0000", None);
        assert!(stale.contains("Cache-Control: no-cache\r\n"), "{stale}");
        let page = get("/", None);
        assert!(page.contains("Cache-Control: no-cache\r\n"));
        assert!(page.contains("Content-Security-Policy: default-src 'self'"));
        let etag = format!("\"{}\"", built().digests[0]);
        assert!(page.contains(&format!("ETag: {etag}\r\n")));
        let again = get("/", Some(&format!("W/\"x\", {etag}")));
        assert!(
            again.starts_with("HTTP/1.1 304 Not Modified\r\n"),
            "{again}"
        );
        assert!(again.ends_with("\r\n\r\n"), "no body: {again}");
        let other = get("/", Some("\"x\""));
        assert!(other.starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
