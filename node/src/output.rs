//! Printing for people and for programs: `--json` prints one JSON document on stdout.

use serde::Serialize;

/// Prints `value` as one pretty JSON document.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as columns padded to their widest cell, the first row being the header.
pub fn table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// A labelled list: the label on the first line, the rest indented under it; `-` if empty.
pub fn field(label: &str, values: &[String]) {
    let mut values = values.iter();
    println!("{label:<10} {}", values.next().map_or("-", String::as_str));
    for value in values {
        println!("{:<10} {value}", "");
    }
}
