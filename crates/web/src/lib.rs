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
}

/// Every file of the bundle; `/` serves `index.html`.
pub const ASSETS: [Asset; 4] = [
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../dist/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../dist/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../dist/app.css"),
    },
    // The service worker: the app opens offline after a first load, where the browser
    // allows a worker (HTTPS or localhost).
    Asset {
        path: "/sw.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../dist/sw.js"),
    },
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
