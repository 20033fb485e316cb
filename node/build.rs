//! Lays out each binary's code in the order link-order/ gives (generate.py there says how
//! and why): the functions a node runs idle, then paired, then busy, packed together, so
//! far fewer pages of the binary end up resident. Only for release builds linked by
//! rustc's own lld (x86_64 Linux, Rust 1.90 on, no linker of the user's choosing), since
//! another linker may not know the flag.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let ordered = env::var("PROFILE").as_deref() == Ok("release") && links_with_rust_lld();
    for bin in ["loopsy", "loopsy-node"] {
        let order = dir.join("link-order").join(format!("{bin}.txt"));
        println!("cargo:rerun-if-changed={}", order.display());
        // `-Wl,` splits its argument at commas.
        if ordered && order.exists() && !order.to_string_lossy().contains(',') {
            let order = order.display();
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={order}");
            // Names the build no longer has (another version of a crate) are skipped.
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
        }
    }
}

fn links_with_rust_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && env::var_os("RUSTC_LINKER").is_none()
        && !flags.contains("link")
        && rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the compiler building this crate (`rustc -vV`: "release: 1.95.0").
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let release = text.lines().find_map(|l| l.strip_prefix("release: "))?;
    let mut parts = release.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
