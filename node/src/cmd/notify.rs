//! `loopsy notify`: an attention event from a script or a hook, on every device.

use std::process::ExitCode;

use clap::Args;
use loopsy_daemon::Home;

/// Tell every device of the mesh that something here wants its person (for an agent's
/// hooks: see "Know when your agent needs you" in docs/sessions.md).
#[derive(Debug, Args)]
pub struct Cmd {
    /// The session it is about (ID, name or unique prefix; this device's): it shows as
    /// waiting until someone types in it or attaches. Inside a session, $LOOPSY_SESSION.
    #[arg(long, env = "LOOPSY_SESSION", value_name = "SESSION")]
    session: Option<String>,
    /// A short title.
    #[arg(long, value_name = "TITLE")]
    title: Option<String>,
    /// What to say.
    text: String,
}

impl Cmd {
    pub async fn run(self, home: Home) -> anyhow::Result<ExitCode> {
        crate::client(&home)
            .notify(self.session, self.title, self.text)
            .await?;
        Ok(ExitCode::SUCCESS)
    }
}
