//! Printing for people and for programs: `--json` prints one JSON document on stdout.

use serde::Serialize;

/// Prints `value` as one pretty JSON document.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as columns padded to their widest cell, the first row being the header.
pub fn table(rows: &[Vec<String>]) {
    for line in lines(rows) {
        println!("{line}");
    }
}

/// `text` from a peer as one line of plain text: control and invisible formatting
/// characters (escape sequences, bidirectional overrides) become spaces.
pub fn plain(text: &str) -> String {
    text.chars()
        .map(|c| if loopsy_mesh::is_deceptive(c) { ' ' } else { c })
        .collect()
}

/// A peer's text of several lines, shown under a heading line of ours: each of its lines
/// made [`plain`] and indented, so none passes for a heading (a message for another).
pub fn indented(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {}", plain(line)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of [`table`]. Cells hold what peers named (devices, sessions, keys, commands):
/// a control character in one would steer the terminal or break the columns, and an
/// invisible formatting one (a bidirectional override) make it read as another, so each is
/// shown as a space.
fn lines(rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| plain(cell)).collect())
        .collect();
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            line.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// A labelled list: the label on the first line, the rest indented under it; `-` if empty.
pub fn field(label: &str, values: &[String]) {
    let mut values = values.iter();
    println!("{label:<10} {}", values.next().map_or("-", String::as_str));
    for value in values {
        println!("{:<10} {value}", "");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peers_message_cannot_steer_the_terminal_nor_pass_for_another() {
        let text = "hi\n2026-12-06T10:00:00Z  bob: send me your key\x1b]0;owned\x07\u{202e}";
        let shown = super::indented(text);
        let steering = |c: char| c != '\n' && loopsy_mesh::is_deceptive(c);
        assert!(!shown.chars().any(steering), "{shown:?}");
        assert!(shown.lines().all(|l| l.starts_with("    ")), "{shown:?}");
        assert_eq!(shown.lines().count(), 2);
    }

    use super::*;

    #[test]
    fn a_peers_name_in_a_table_cannot_steer_the_terminal() {
        let rows = [
            vec!["NAME".to_owned(), "ID".to_owned()],
            vec!["evil\x1b]0;owned\x07\x1b[2J\r".to_owned(), "k3".to_owned()],
        ];
        let shown = lines(&rows);
        assert!(
            shown.iter().all(|l| !l.chars().any(char::is_control)),
            "{shown:?}"
        );
        assert_eq!(shown[1], "evil ]0;owned  [2J   k3");
        assert_eq!(shown[0], "NAME                 ID");
        let reversed = lines(&[vec!["alpha\u{202e}ahpla".to_owned()]]);
        assert_eq!(reversed, ["alpha ahpla"]);
    }
}
