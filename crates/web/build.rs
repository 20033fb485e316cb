//! Gzips the bundle once, at build time, and names each file's version (its entity tag),
//! so the node serves a quarter of the bytes to a browser that takes gzip and nothing
//! but a `304` to one that has the file already.

use std::{env, fs, io::Write, path::Path};

use flate2::{Compression, Crc, GzBuilder};

/// The files of `dist/`, as `src/lib.rs` embeds them.
const FILES: [&str; 4] = ["index.html", "app.js", "app.css", "sw.js"];

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let dist = Path::new("dist");
    println!("cargo:rerun-if-changed=dist");
    for name in FILES {
        let path = dist.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let body = fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run npm run build in app/)", path.display()));
        // No file name and no time in the header: the same bundle gives the same bytes.
        let mut gzip = GzBuilder::new().write(Vec::new(), Compression::best());
        gzip.write_all(&body).expect("gzip in memory");
        let gzipped = gzip.finish().expect("gzip in memory");
        fs::write(Path::new(&out).join(format!("{name}.gz")), gzipped).expect("write OUT_DIR");
        let mut crc = Crc::new();
        crc.update(&body);
        let etag = format!("\"{:x}-{:08x}\"", body.len(), crc.sum());
        fs::write(Path::new(&out).join(format!("{name}.etag")), etag).expect("write OUT_DIR");
    }
}
