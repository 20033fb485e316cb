//! File errors in the words `cp` and `scp` use ("no such file or directory"), not Rust's
//! (`No such file or directory (os error 2)`): what a user of `loopsy cp` reads, from this
//! device or from the peer.

use std::io;

/// What went wrong with a file, in plain words.
pub fn io(e: &io::Error) -> String {
    use io::ErrorKind::*;
    let words = match e.kind() {
        NotFound => "no such file or directory",
        NotADirectory => "not a directory",
        IsADirectory => "is a directory",
        PermissionDenied => "permission denied",
        AlreadyExists => "file exists",
        StorageFull => "no space left on device",
        ReadOnlyFilesystem => "read-only file system",
        _ => return without_code(&e.to_string()),
    };
    words.to_owned()
}

/// The system's message without Rust's ` (os error N)` tail, starting in lower case.
fn without_code(text: &str) -> String {
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(code: i32) -> String {
        io(&io::Error::from_raw_os_error(code))
    }

    #[test]
    fn errors_read_as_cp_writes_them() {
        assert_eq!(errno(2), "no such file or directory");
        assert_eq!(errno(20), "not a directory");
        assert_eq!(errno(13), "permission denied");
        // One with no words of its own here: the system's, without the code.
        assert_eq!(errno(5), "input/output error");
        assert_eq!(io(&io::Error::other("Custom")), "custom");
    }
}
