//! The files a service manager runs the node from: a systemd unit (Linux) and a launchd
//! property list (macOS). Pure text, so both are tested on every platform.

use std::path::{Path, PathBuf};

/// What the service runs: `exe --home HOME node ARGS..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The `loopsy` binary, absolute.
    pub exe: PathBuf,
    /// The node's home, absolute: a service's environment differs from the shell's.
    pub home: PathBuf,
    /// Flags for `loopsy node`.
    pub node_args: Vec<String>,
}

impl Spec {
    /// The command line, one argument per item.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![
            self.exe.display().to_string(),
            "--home".into(),
            self.home.display().to_string(),
            "node".into(),
        ];
        argv.extend(self.node_args.iter().cloned());
        argv
    }
}

/// Which systemd manager runs the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The user's own manager (`systemctl --user`): no root needed.
    User,
    /// The system manager, running the node as this user (headless hosts); a name that
    /// passes [`valid_user`], since systemd does not unquote `User=`.
    System { user: String },
}

/// Whether `name` is a user name systemd takes as it is: letters, digits, `_`, `.`, `-`,
/// not starting with `-` (systemd's strict rules, less their length limit).
pub fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The systemd unit's name.
pub const UNIT: &str = "loopsy.service";
/// The launchd job's label.
pub const LABEL: &str = "dev.loopsy.node";

/// A systemd unit: restarted on failure, logging to the journal (stdout and stderr are
/// not terminals there, so the log has no colour), reloaded by SIGHUP.
pub fn systemd_unit(spec: &Spec, scope: &Scope) -> String {
    let exec_start = spec
        .argv()
        .iter()
        .map(|arg| systemd_quote(arg))
        .collect::<Vec<_>>()
        .join(" ");
    let (user_line, wanted_by) = match scope {
        Scope::User => (String::new(), "default.target"),
        Scope::System { user } => (format!("User={user}\n"), "multi-user.target"),
    };
    format!(
        "# Written by `loopsy service install`; `loopsy service uninstall` removes it.\n\
         [Unit]\n\
         Description=Loopsy node ({home})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         {user_line}\
         ExecStart={exec_start}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         # SIGTERM to the node alone: it ends its sessions' programs itself, in order.\n\
         KillMode=mixed\n\
         TimeoutStopSec=20\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        home = systemd_escape_specifiers(&spec.home.display().to_string()),
    )
}

/// One argument of a systemd command line: double-quoted, with `\` and `"` escaped, and
/// `%` and `$` doubled so that systemd expands neither specifiers nor variables in it.
pub fn systemd_quote(arg: &str) -> String {
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('"');
    for c in arg.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Text outside a command line where only specifiers expand.
fn systemd_escape_specifiers(text: &str) -> String {
    text.replace('%', "%%").replace('\n', " ")
}

/// A LaunchAgent: started at login (`RunAtLoad`), started again whenever it stops
/// (`KeepAlive`), its output appended to `log`.
pub fn launchd_plist(spec: &Spec, log: &Path) -> String {
    let args: String = spec
        .argv()
        .iter()
        .map(|arg| format!("    <string>{}</string>\n", xml_escape(arg)))
        .collect();
    let log = xml_escape(&log.display().to_string());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \x20 <key>Label</key>\n\
         \x20 <string>{LABEL}</string>\n\
         \x20 <key>ProgramArguments</key>\n\
         \x20 <array>\n\
         {args}\
         \x20 </array>\n\
         \x20 <key>RunAtLoad</key>\n\
         \x20 <true/>\n\
         \x20 <key>KeepAlive</key>\n\
         \x20 <true/>\n\
         \x20 <key>ProcessType</key>\n\
         \x20 <string>Background</string>\n\
         \x20 <key>StandardOutPath</key>\n\
         \x20 <string>{log}</string>\n\
         \x20 <key>StandardErrorPath</key>\n\
         \x20 <string>{log}</string>\n\
         </dict>\n\
         </plist>\n"
    )
}

fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits an `ExecStart=` value back into arguments, as systemd does for what
    /// [`systemd_quote`] writes.
    fn systemd_unquote_line(line: &str) -> Option<Vec<String>> {
        let mut args = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => return Some(args),
                Some('"') => {}
                Some(_) => return None,
            }
            let mut arg = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        'n' => arg.push('\n'),
                        c => arg.push(c),
                    },
                    '%' => {
                        chars.next_if_eq(&'%')?;
                        arg.push('%');
                    }
                    '$' => {
                        chars.next_if_eq(&'$')?;
                        arg.push('$');
                    }
                    c => arg.push(c),
                }
            }
            args.push(arg);
        }
    }

    fn spec() -> Spec {
        Spec {
            exe: "/usr/local/bin/loopsy".into(),
            home: "/home/ada/.local/share/loopsy".into(),
            node_args: vec!["--no-mdns".into(), "--name".into(), "desk top".into()],
        }
    }

    fn exec_start(unit: &str) -> &str {
        unit.lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart")
    }

    #[test]
    fn a_user_unit_restarts_on_failure_and_runs_the_node_with_its_home() {
        let unit = systemd_unit(&spec(), &Scope::User);
        for line in [
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillMode=mixed",
            "WantedBy=default.target",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
        }
        assert!(!unit.contains("User="), "{unit}");
        assert_eq!(
            exec_start(&unit),
            "\"/usr/local/bin/loopsy\" \"--home\" \"/home/ada/.local/share/loopsy\" \"node\" \
             \"--no-mdns\" \"--name\" \"desk top\""
        );
    }

    #[test]
    fn a_system_unit_names_its_user_and_starts_with_the_machine() {
        let unit = systemd_unit(&spec(), &Scope::System { user: "ada".into() });
        assert!(unit.lines().any(|l| l == "User=ada"), "{unit}");
        assert!(
            unit.lines().any(|l| l == "WantedBy=multi-user.target"),
            "{unit}"
        );
    }

    #[test]
    fn specifiers_and_variables_in_arguments_are_not_expanded() {
        let mut spec = spec();
        spec.home = "/srv/100%/$HOME \"q\" \\".into();
        let unit = systemd_unit(&spec, &Scope::User);
        assert!(
            exec_start(&unit).contains(r#""/srv/100%%/$$HOME \"q\" \\""#),
            "{unit}"
        );
        assert!(
            unit.contains("Description=Loopsy node (/srv/100%%/"),
            "{unit}"
        );
    }

    #[test]
    fn a_launch_agent_runs_at_load_and_is_kept_alive() {
        let plist = launchd_plist(&spec(), Path::new("/Users/ada/Library/Logs/loopsy.log"));
        for needle in [
            "<key>Label</key>\n  <string>dev.loopsy.node</string>",
            "<key>RunAtLoad</key>\n  <true/>",
            "<key>KeepAlive</key>\n  <true/>",
            "    <string>/usr/local/bin/loopsy</string>\n    <string>--home</string>\n",
            "    <string>desk top</string>\n",
            "<key>StandardErrorPath</key>\n  <string>/Users/ada/Library/Logs/loopsy.log</string>",
        ] {
            assert!(plist.contains(needle), "{needle:?} missing:\n{plist}");
        }
    }

    #[test]
    fn a_launch_agent_escapes_markup_in_arguments() {
        let mut spec = spec();
        spec.node_args = vec!["</string><key>x</key>&".into()];
        let plist = launchd_plist(&spec, Path::new("/tmp/l"));
        assert!(
            plist.contains("<string>&lt;/string&gt;&lt;key&gt;x&lt;/key&gt;&amp;</string>"),
            "{plist}"
        );
    }

    #[test]
    fn only_plain_user_names_are_taken() {
        assert!(valid_user("ada") && valid_user("build-bot_2.x"));
        for bad in ["", "-x", "a b", "a\nExecStart=/bin/sh", "\"root\"", "ada%i"] {
            assert!(!valid_user(bad), "{bad:?}");
        }
    }

    proptest! {
        /// Whatever the paths and flags, ExecStart reads back as exactly the argv.
        #[test]
        fn exec_start_reads_back_as_the_argv(
            home in "/[ -~]{0,40}",
            args in proptest::collection::vec("[ -~\n]{0,20}", 0..5),
        ) {
            let spec = Spec { exe: "/bin/loopsy".into(), home: home.into(), node_args: args };
            let unit = systemd_unit(&spec, &Scope::User);
            prop_assert_eq!(systemd_unquote_line(exec_start(&unit)), Some(spec.argv()));
        }
    }
}
