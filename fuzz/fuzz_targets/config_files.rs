//! Any text as a node's config.toml, its trust.toml, or a relay's relay.toml: a config or
//! an error saying what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = loopsy_daemon::config::Config::parse(text);
    let _ = loopsy_daemon::trust::store::parse(text);
    let _ = loopsy_relay::Settings::parse(text);
});
