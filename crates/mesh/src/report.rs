//! Errors in words, for logs and messages. libp2p's errors nest (a transport error holds
//! an `Either` of each transport's, which holds an `io::Error`), and their `Debug` reads
//! `Other(Right(Right(Io(Os { code: 99, ..`, while the `Display` of the outer ones is often
//! empty or generic. [`Chain`] says each level's message once, outermost first:
//! `Cannot assign requested address (os error 99)`.

use std::{error::Error, fmt};

/// An error and its sources, as one line: `outer: inner: innermost`, skipping messages
/// that are empty or already said by the level above.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = String::new();
        let mut level: Option<&(dyn Error + 'static)> = Some(self.0);
        while let Some(error) = level {
            let message = error.to_string();
            let message = message.trim();
            if !message.is_empty() && !said.contains(message) {
                if !said.is_empty() {
                    said.push_str(": ");
                }
                said.push_str(message);
            }
            level = error.source();
        }
        if said.is_empty() {
            said.push_str("unknown error");
        }
        f.write_str(&said)
    }
}

/// [`Chain`] as a string.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    Chain(error).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::transport::TransportError;
    use std::io;

    #[test]
    fn a_nested_transport_error_reads_as_its_causes() {
        // The shape of what `listen_on` gives for an address this machine does not have:
        // transport errors wrapped in I/O errors, down to the system's.
        let os = io::Error::from_raw_os_error(99);
        let inner: TransportError<io::Error> = TransportError::Other(os);
        let error: TransportError<io::Error> = TransportError::Other(io::Error::other(inner));
        let said = chain(&error);
        assert_eq!(said, "Cannot assign requested address (os error 99)");
        assert!(!format!("{error:?}").contains(&said), "Debug is a dump");
    }

    #[test]
    fn each_level_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot save the file: {0}")]
        struct Saving(#[source] io::Error);
        let error = Saving(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(chain(&error), "cannot save the file: entity not found");
        #[derive(Debug, thiserror::Error)]
        #[error("relay refused")]
        struct Refused(#[source] io::Error);
        let error = Refused(io::Error::other("no reservation"));
        assert_eq!(chain(&error), "relay refused: no reservation");
    }
}
