//! Pairing and trust between real nodes: a code across a real LAN, the mesh spreading
//! membership and revocation, and every way a code can be wrong.

use std::time::Duration;

use loopsy_tests::{
    netlab::Lab,
    node::{Invite, Node, Options},
    wait_for,
};
use loopsy_wire::pair::Code;
use serde_json::Value;

fn has_peer(list: &[Value], peer_id: &str) -> bool {
    list.iter().any(|p| p["peer_id"] == peer_id)
}

fn find<'a>(list: &'a [Value], peer_id: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["peer_id"] == peer_id)
}

/// Pairs `joiner` with `inviter` through a code and checks both report the same check code.
fn pair(inviter: &Node, joiner: &Node) -> anyhow::Result<()> {
    let mut invite = inviter.invite(&["--ttl", "60s"])?;
    let (ok, joined) = joiner.join(&invite.code);
    assert!(ok, "join failed: {joined}");
    let invited = invite.result()?;
    assert_eq!(joined["paired"], true);
    assert_eq!(invited["paired"], true);
    assert_eq!(
        joined["check_code"], invited["check_code"],
        "both show one check code"
    );
    assert_eq!(joined["name"], inviter.name.as_str());
    assert_eq!(invited["name"], joiner.name.as_str());
    assert_eq!(invited["peer_id"], joiner.peer_id.as_str());
    Ok(())
}

#[test]
fn pairing_on_a_lan_spreads_membership_and_revocation() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("pair") else {
        return Ok(());
    };
    let hosts = [lab.host("a")?, lab.host("b")?, lab.host("c")?];
    lab.lan(
        "lan",
        &[
            (&hosts[0], "eth0", "10.78.0.1/24"),
            (&hosts[1], "eth0", "10.78.0.2/24"),
            (&hosts[2], "eth0", "10.78.0.3/24"),
        ],
    )?;
    let a = Node::start(Options::named("alpha").netns(&hosts[0]))?;
    let b = Node::start(Options::named("bravo").netns(&hosts[1]))?;
    let c = Node::start(Options::named("charlie").netns(&hosts[2]))?;

    pair(&a, &b)?;
    for (me, other) in [(&a, &b), (&b, &a)] {
        let seen = wait_for("paired and online", Duration::from_secs(20), || {
            me.peer(&other.peer_id)
                .filter(|p| p["paired"] == true && p["online"] == true)
        })?;
        assert_eq!(seen["connection"], "direct");
    }

    // Charlie pairs with alpha only, and becomes a member for bravo too (and bravo for it).
    pair(&a, &c)?;
    let intro = wait_for("bravo to trust charlie", Duration::from_secs(20), || {
        find(&b.trusted(), &c.peer_id).cloned()
    })?;
    assert_eq!(intro["via"], "introduced by alpha");
    assert_eq!(intro["name"], "charlie");
    wait_for("charlie to trust bravo", Duration::from_secs(20), || {
        has_peer(&c.trusted(), &b.peer_id).then_some(())
    })?;
    wait_for(
        "bravo and charlie to connect",
        Duration::from_secs(20),
        || b.peer(&c.peer_id).filter(|p| p["connection"] == "direct"),
    )?;

    // Bravo revokes charlie: its connection to charlie is closed, and the mesh follows.
    let out = b.cli(&["trust", "rm", "charlie"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(closed_connections(&said) >= 1, "{said}");
    assert!(!has_peer(&b.trusted(), &c.peer_id));
    wait_for("alpha to drop charlie", Duration::from_secs(20), || {
        (!has_peer(&a.trusted(), &c.peer_id)).then_some(())
    })?;
    // The keeper records the removal once it has told the mesh: a moment after the list.
    wait_for(
        "alpha's audit log to record the revocation",
        Duration::from_secs(10),
        || {
            a.audit()
                .iter()
                .any(|e| e["action"] == "member removed" && e["peer"] == c.peer_id.as_str())
                .then_some(())
        },
    )?;
    // Charlie still trusts alpha and keeps trying; alpha refuses it and says so.
    wait_for("alpha to refuse charlie", Duration::from_secs(30), || {
        a.audit()
            .into_iter()
            .find(|e| e["peer"] == c.peer_id.as_str() && e["result"] == "denied")
    })?;
    assert_eq!(
        a.peer(&c.peer_id).map(|p| p["paired"].clone()),
        Some(Value::Bool(false))
    );
    Ok(())
}

/// Waits until `me` sees a device named `name` on the LAN, as `pair join` by short code
/// needs.
fn wait_to_see(me: &Node, other: &Node) -> anyhow::Result<()> {
    wait_for(
        &format!("{} to see {} by name", me.name, other.name),
        Duration::from_secs(20),
        || {
            me.peer(&other.peer_id)
                .filter(|p| p["online"] == true && p["name"] == other.name.as_str())
        },
    )?;
    Ok(())
}

/// `loopsy pair join WORDS.. --json`, the code given as several arguments, as a user types
/// it unquoted: whether it succeeded, and its error.
fn join_words(joiner: &Node, code: &str) -> (bool, String) {
    let mut args = vec!["pair", "join"];
    args.extend(code.split_whitespace());
    args.push("--json");
    let out = joiner.cli(&args);
    let said: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let error = said["error"].as_str().unwrap_or_default().to_owned();
    (out.status.success(), error)
}

/// The first line a waiting `loopsy pair` prints on stderr, once it does.
fn first_stderr_line(invite: &mut Invite) -> std::sync::mpsc::Receiver<String> {
    let stderr = invite.child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line).is_ok() {
            let _ = tx.send(line.trim_end().to_owned());
        }
    });
    rx
}

/// The short code with its secret's last digit changed.
fn wrong_digit(short: &str) -> String {
    let mut wrong = short.to_owned();
    let last = wrong.pop().and_then(|c| c.to_digit(10)).expect("a digit");
    wrong.push(char::from_digit((last + 1) % 10, 10).expect("a digit"));
    wrong
}

#[test]
fn a_short_code_pairs_a_device_in_sight_and_a_wrong_one_withdraws_it() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("short") else {
        return Ok(());
    };
    let hosts = [lab.host("a")?, lab.host("b")?, lab.host("c")?];
    lab.lan(
        "lan",
        &[
            (&hosts[0], "eth0", "10.79.0.1/24"),
            (&hosts[1], "eth0", "10.79.0.2/24"),
            (&hosts[2], "eth0", "10.79.0.3/24"),
        ],
    )?;
    let a = Node::start(Options::named("alpha").netns(&hosts[0]))?;
    let b = Node::start(Options::named("bravo").netns(&hosts[1]))?;
    let c = Node::start(Options::named("charlie").netns(&hosts[2]))?;
    wait_to_see(&b, &a)?;
    wait_to_see(&c, &a)?;

    // Bravo pairs by the short code, typed unquoted, as the user reads it off alpha.
    let mut invite = a.invite(&["--ttl", "60s"])?;
    let short = invite.short_code.clone().expect("a short code");
    let (name, digits) = short.rsplit_once(' ').expect("NAME N-NNN-NNN-NNN");
    assert_eq!(name, "alpha");
    let shape: String = digits
        .chars()
        .map(|c| if c.is_ascii_digit() { 'N' } else { c })
        .collect();
    assert_eq!(shape, "N-NNN-NNN-NNN", "{short}");
    let out = b.cli(&["pair", "join", "alpha", digits, "--json"]);
    let joined: Value = serde_json::from_slice(&out.stdout)?;
    assert!(out.status.success(), "{joined}");
    let invited = invite.result()?;
    assert_eq!(joined["paired"], true);
    assert_eq!(joined["name"], "alpha");
    assert_eq!(invited["peer_id"], b.peer_id.as_str());
    assert_eq!(joined["check_code"], invited["check_code"]);
    assert!(has_peer(&a.trusted(), &b.peer_id) && has_peer(&b.trusted(), &a.peer_id));
    drop(invite);

    // Charlie mistypes a digit: each try says so, and the third withdraws the short code.
    let refused = "the other device refused: wrong pairing code; ";
    let mut invite = a.invite(&["--ttl", "60s"])?;
    let inviter_said = first_stderr_line(&mut invite);
    let short = invite.short_code.clone().expect("a short code");
    for left in [
        "2 more tries before the short code is withdrawn",
        "one more try before the short code is withdrawn",
        "the short code is now withdrawn: make a new one with `loopsy pair` on the other \
         device (its long code still works)",
    ] {
        let (ok, error) = join_words(&c, &wrong_digit(&short));
        assert!(!ok);
        assert_eq!(error, format!("{refused}{left}"));
    }
    assert_eq!(
        inviter_said.recv_timeout(Duration::from_secs(10))?,
        "loopsy: the short code was tried wrongly 3 times and is withdrawn; the long code \
         still works",
        "alpha's `loopsy pair` says so"
    );
    let (ok, error) = join_words(&c, &short);
    assert!(!ok, "the right short code no longer works");
    assert_eq!(
        error,
        "the other device refused: unknown, used or withdrawn short pairing code; make a new \
         one with `loopsy pair` on the other device"
    );
    assert!(!has_peer(&a.trusted(), &c.peer_id));
    assert!(
        a.audit()
            .iter()
            .any(|e| e["action"] == "pair" && e["result"] == "denied"),
        "alpha's audit log has the wrong tries"
    );
    // The long code of the same invitation still works.
    let (ok, out) = c.join(&invite.code);
    assert!(ok, "{out}");
    assert_eq!(invite.result()?["peer_id"], c.peer_id.as_str());
    Ok(())
}

#[test]
fn a_short_code_names_exactly_one_device_in_sight() -> anyhow::Result<()> {
    let Some(mut lab) = Lab::new("shortname") else {
        return Ok(());
    };
    let hosts = [lab.host("a")?, lab.host("b")?, lab.host("c")?];
    lab.lan(
        "lan",
        &[
            (&hosts[0], "eth0", "10.80.0.1/24"),
            (&hosts[1], "eth0", "10.80.0.2/24"),
            (&hosts[2], "eth0", "10.80.0.3/24"),
        ],
    )?;
    let a = Node::start(Options::named("alpha").netns(&hosts[0]))?;
    let b = Node::start(Options::named("bravo").netns(&hosts[1]))?;
    wait_to_see(&b, &a)?;

    let (ok, error) = join_words(&b, "zulu 1-234-567-890");
    assert!(!ok);
    assert_eq!(
        error,
        "no device named 'zulu' is in sight (see `loopsy peers`); on the same network it shows \
         up within seconds, otherwise use the long code (LOOPSY1-...)"
    );
    let (ok, error) = join_words(&b, "bravo 1-234-567-890");
    assert!(!ok);
    assert_eq!(
        error,
        "this is this device's own pairing code; use it on the other device"
    );
    let (ok, error) = join_words(&b, "alpha 1-234-567-89");
    assert!(!ok);
    assert!(
        error.starts_with("the short pairing code is mistyped"),
        "{error}"
    );

    // A second device calls itself alpha: the name no longer says which.
    let twin = Node::start(Options::named("alpha").netns(&hosts[2]))?;
    wait_to_see(&b, &twin)?;
    let (ok, error) = join_words(&b, "Alpha 1-234-567-890");
    assert!(!ok);
    let mut ids = [a.peer_id.as_str(), twin.peer_id.as_str()];
    let listed = |ids: [&str; 2]| {
        format!(
            "2 devices in sight are named 'Alpha' ({}); use the long code (LOOPSY1-...) to \
             pick the right one",
            ids.join(", ")
        )
    };
    let expected_one = listed(ids);
    ids.reverse();
    assert!(error == expected_one || error == listed(ids), "{error}");
    assert!(a.trusted().is_empty() && b.trusted().is_empty());
    Ok(())
}

/// The N in `trust rm`'s "closed N connections".
fn closed_connections(said: &str) -> u32 {
    said.split("closed ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Rewrites a code with `change` applied, keeping its checksum valid.
fn tamper(code: &str, change: impl FnOnce(&mut Code)) -> String {
    let mut parsed = Code::from_text(code).expect("a valid code");
    change(&mut parsed);
    parsed.to_text()
}

fn assert_untrusting(nodes: &[&Node]) {
    for node in nodes {
        assert!(node.trusted().is_empty(), "{} trusts nobody", node.name);
    }
}

#[test]
fn wrong_expired_reused_and_foreign_codes_pair_nothing() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let c = Node::start(Options::isolated("charlie"))?;

    // A wrong secret: refused by alpha, and alpha's code still works afterwards.
    let mut invite = a.invite(&["--ttl", "60s"])?;
    let wrong = tamper(&invite.code, |c| c.secret[0] ^= 1);
    let (ok, out) = b.join(&wrong);
    assert!(!ok);
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong pairing code")),
        "{out}"
    );
    assert_untrusting(&[&a, &b]);
    assert!(
        a.audit()
            .iter()
            .any(|e| e["action"] == "pair" && e["result"] == "denied")
    );

    // The right code, then the same code again from another device.
    let (ok, _) = b.join(&invite.code);
    assert!(ok);
    assert_eq!(invite.result()?["paired"], true);
    let (ok, out) = c.join(&invite.code);
    assert!(!ok, "a used code pairs nothing: {out}");
    assert!(
        out["error"].as_str().is_some_and(|e| e.contains("used")),
        "{out}"
    );
    assert_untrusting(&[&c]);
    assert!(!has_peer(&a.trusted(), &c.peer_id));

    // A code lives between 30 s and 24 h, single-use or not: anything else is refused with
    // the range (a long-lived `--multi` code would be a bearer token for the defaults).
    for ttl in [
        &["--ttl", "1s"][..],
        &["--ttl", "0s"],
        &["--ttl", "99d"],
        &["--multi", "--ttl", "2d"],
    ] {
        let mut args = vec!["pair", "--json"];
        args.extend(ttl);
        let out = a.cli(&args);
        assert!(!out.status.success(), "{ttl:?} accepted");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("between 30s and 24h"), "{ttl:?}: {said}");
    }

    // An expired code: the joiner sees it at once (the inviter's own check of expiry is
    // covered by the invitations' unit tests).
    let expired = tamper(&invite.code, |c| c.expires = 1_000_000);
    let (ok, out) = c.join(&expired);
    assert!(!ok);
    assert!(
        out["error"].as_str().is_some_and(|e| e.contains("expired")),
        "{out}"
    );
    assert_untrusting(&[&c]);

    // A code made for another device: bravo's peer ID with alpha's addresses.
    let invite = a.invite(&["--ttl", "60s"])?;
    let b_id = b.peer_id.parse::<libp2p::PeerId>()?.to_bytes();
    let (ok, out) = c.join(&tamper(&invite.code, |c| c.inviter = b_id));
    assert!(!ok, "{out}");
    assert_untrusting(&[&c]);

    // A withdrawn code: the inviter's `loopsy pair` went away.
    let withdrawn = invite.code.clone();
    drop(invite);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = c.join(&withdrawn);
    assert!(!ok);
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|e| e.contains("withdrawn")),
        "{out}"
    );
    assert_untrusting(&[&c]);

    // Not a code at all, and a mistyped one.
    let (ok, out) = c.join("hello");
    assert!(
        !ok && out["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a Loopsy pairing code"))
    );
    let mut typo = withdrawn.clone();
    typo.pop();
    let (ok, out) = c.join(&typo);
    assert!(
        !ok && out["error"]
            .as_str()
            .is_some_and(|e| e.contains("mistyped")),
        "{out}"
    );
    Ok(())
}

#[test]
fn repeated_failed_joins_are_rate_limited() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let invite = a.invite(&["--ttl", "60s"])?;
    let mut last = Value::Null;
    for i in 0..6u8 {
        let (ok, out) = b.join(&tamper(&invite.code, |c| c.secret[1] ^= i + 1));
        assert!(!ok);
        last = out;
    }
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many pairing attempts")),
        "{last}"
    );
    // Even the right code waits out the limit.
    let (ok, _) = b.join(&invite.code);
    assert!(!ok);
    assert_untrusting(&[&a, &b]);
    Ok(())
}

#[test]
fn trust_by_peer_id_then_revoke() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let addr = |n: &Node| -> anyhow::Result<String> {
        let status = n.json(&["status", "--json"])?;
        Ok(status["listen_addrs"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    let out = a.cli(&[
        "trust",
        "add",
        &b.peer_id,
        "--name",
        "bravo",
        "--addr",
        &addr(&b)?,
        "--allow",
        "exec,ctx",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("loopsy trust add"),
        "says what to run on the other side"
    );
    let out = b.cli(&[
        "trust",
        "add",
        &a.peer_id,
        "--name",
        "alpha",
        "--addr",
        &addr(&a)?,
    ]);
    assert!(out.status.success());

    let listed = find(&a.trusted(), &b.peer_id).cloned().expect("listed");
    assert_eq!(listed["allow"], serde_json::json!(["exec", "ctx"]));
    assert_eq!(listed["via"], "added");
    wait_for("the two to connect", Duration::from_secs(20), || {
        a.peer(&b.peer_id)
            .filter(|p| p["paired"] == true && p["connection"] == "direct")
    })?;

    // Bad input is refused with a clear error and changes nothing.
    for args in [
        &["trust", "add", "not-a-peer-id", "--name", "x"][..],
        &["trust", "add", &b.peer_id, "--name", "x", "--allow", "root"],
        &["trust", "rm", "nobody"],
    ] {
        let out = a.cli(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    assert_eq!(a.trusted().len(), 1);

    let out = a.cli(&["trust", "rm", &b.peer_id[..12]]);
    assert!(out.status.success(), "a unique prefix names the peer");
    assert!(closed_connections(&String::from_utf8_lossy(&out.stdout)) >= 1);
    assert!(a.trusted().is_empty());
    Ok(())
}

#[test]
fn a_multi_use_code_pairs_several_devices() -> anyhow::Result<()> {
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo"))?;
    let c = Node::start(Options::isolated("charlie"))?;
    let mut invite = a.invite(&["--ttl", "60s", "--multi", "--allow", "ctx,msg"])?;
    for joiner in [&b, &c] {
        let (ok, out) = joiner.join(&invite.code);
        assert!(ok, "{out}");
        assert_eq!(invite.result()?["peer_id"], joiner.peer_id.as_str());
    }
    let trusted = a.trusted();
    for joiner in [&b, &c] {
        let entry = find(&trusted, &joiner.peer_id).expect("trusted");
        assert_eq!(
            entry["allow"],
            serde_json::json!(["ctx", "msg"]),
            "--allow applies to each"
        );
    }
    Ok(())
}

#[test]
fn paired_devices_reconnect_after_a_restart() -> anyhow::Result<()> {
    let dir = loopsy_tests::temp::TempDir::new("restart");
    let b_home = dir.path().join("bravo");
    let a = Node::start(Options::isolated("alpha"))?;
    let b = Node::start(Options::isolated("bravo").home(&b_home))?;
    pair(&a, &b)?;
    let b_id = b.peer_id.clone();
    b.stop()?;
    let offline = wait_for(
        "alpha to see bravo offline",
        Duration::from_secs(20),
        || a.peer(&b_id).filter(|p| p["online"] == false),
    )?;
    assert_eq!(offline["paired"], true, "still paired while offline");
    // Alpha's keeper says why it cannot reach bravo, in words, once per reason.
    wait_for(
        "alpha to log why bravo is unreachable",
        Duration::from_secs(30),
        || a.log().contains("bravo unreachable: ").then_some(()),
    )?;
    let log = a.log();
    let said = log
        .lines()
        .find(|l| l.contains("bravo unreachable: "))
        .unwrap_or_default();
    assert!(said.contains("next try in"), "{said}");

    // Bravo comes back on another port; it remembers alpha and dials it.
    let b = Node::start(Options::isolated("bravo").home(&b_home))?;
    assert!(
        has_peer(&b.trusted(), &a.peer_id),
        "the trust store survived the restart"
    );
    for (me, other) in [(&a, &b), (&b, &a)] {
        wait_for("the two to reconnect", Duration::from_secs(20), || {
            me.peer(&other.peer_id)
                .filter(|p| p["paired"] == true && p["online"] == true)
        })?;
    }
    wait_for("alpha to log bravo back", Duration::from_secs(10), || {
        a.log().contains("bravo is reachable again").then_some(())
    })?;
    Ok(())
}
