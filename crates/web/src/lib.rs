//! The browser app's bundle, as built from `app/` by `npm run build` into `dist/` and
//! committed (CI checks that the committed bundle is what the sources build). A node or a
//! relay serves these files ([`SITE`]); nothing here runs npm.

use loopsy_mesh::web::{Page, Site};

/// The bundle as a node's or a relay's WebSocket listener serves it to plain HTTP requests.
pub const SITE: Site = Site {
    file: |path| {
        asset(path).map(|a| Page {
            content_type: a.content_type,
            body: a.bytes,
            gzip: Some(a.gzip),
            etag: Some(a.etag),
        })
    },
    csp: CSP,
};

/// The page's Content-Security-Policy as a header: its `<meta>` policy, and what only a
/// header can say, that no other page may frame it (and lay itself over the Pair button).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       connect-src 'self' ws: wss:; img-src 'self' data:; font-src 'self'; \
                       manifest-src 'self'; base-uri 'none'; form-action 'none'; \
                       frame-ancestors 'none'";

/// One file of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
    /// The bytes gzipped (by `build.rs`).
    pub gzip: &'static [u8],
    /// Its entity tag, quoted: its length and CRC-32.
    pub etag: &'static str,
}

/// An [`Asset`] of `dist/`, with what `build.rs` made of it.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../dist/", $file)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".gz")),
            etag: include_str!(concat!(env!("OUT_DIR"), "/", $file, ".etag")),
        }
    };
}

/// Every file of the bundle; `/` serves `index.html`.
pub const ASSETS: [Asset; 4] = [
    asset!("/index.html", "index.html", "text/html; charset=utf-8"),
    asset!("/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/app.css", "app.css", "text/css; charset=utf-8"),
    // The service worker: the app opens offline after a first load, where the browser
    // allows a worker (HTTPS or localhost).
    asset!("/sw.js", "sw.js", "text/javascript; charset=utf-8"),
];

/// The file served at `path` (`/` is the page itself).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_there() {
        assert_eq!(asset("/"), asset("/index.html"));
        for a in &ASSETS {
            assert!(
                !a.bytes.is_empty(),
                "{} is empty; run npm run build",
                a.path
            );
        }
        let page = std::str::from_utf8(asset("/").expect("page").bytes).expect("utf-8");
        assert!(page.contains("app.js") && page.contains("Content-Security-Policy"));
        assert!(asset("/../secret").is_none());
    }

    #[test]
    fn each_file_unzips_to_itself_and_has_a_tag_of_its_own() {
        use std::io::Read;
        let mut tags = std::collections::HashSet::new();
        for a in &ASSETS {
            let mut unzipped = Vec::new();
            flate2::read::GzDecoder::new(a.gzip)
                .read_to_end(&mut unzipped)
                .expect("gzip");
            assert!(unzipped == a.bytes, "{} unzips to other bytes", a.path);
            assert!(
                a.etag.starts_with('"') && a.etag.ends_with('"'),
                "{}",
                a.etag
            );
            assert!(tags.insert(a.etag), "{} shares its tag", a.path);
        }
        let script = asset("/app.js").expect("app.js");
        assert!(
            script.gzip.len() * 2 < script.bytes.len(),
            "gzip halves the script at least"
        );
    }

    #[test]
    fn the_header_policy_is_the_pages_own_and_forbids_framing() {
        let page = std::str::from_utf8(asset("/").expect("page").bytes).expect("utf-8");
        let meta = page
            .split("http-equiv=\"Content-Security-Policy\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSP meta tag");
        assert_eq!(CSP, format!("{meta}; frame-ancestors 'none'"));
    }
}
