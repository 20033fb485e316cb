//! The browser app's bundle, as built from `app/` by `npm run build` into `dist/` and
//! committed (CI checks that the committed bundle is what the sources build). A node or a
//! relay serves these files; nothing here runs npm.

/// One file of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file of the bundle; `/` serves `index.html`.
pub const ASSETS: [Asset; 3] = [
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
}
