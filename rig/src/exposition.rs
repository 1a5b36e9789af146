//! A parser of the Prometheus text exposition format (0.0.4, sample lines only), written
//! independently of the exporter's encoder because tests use it to read what the exporter said.
//! Produces [`Series`]: name, labels, value.

use std::collections::BTreeMap;

/// One series of the exposition text: name, labels, value.
pub type Series = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text 0.0.4 (sample lines only), unescaping label values.
pub fn parse_exposition(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name_end, labels, rest) = match line.find('{') {
            Some(open) => {
                let mut labels = BTreeMap::new();
                let bytes: Vec<char> = line[open + 1..].chars().collect();
                let mut i = 0;
                loop {
                    if bytes[i] == '}' {
                        i += 1;
                        break;
                    }
                    let key_start = i;
                    while bytes[i] != '=' {
                        i += 1;
                    }
                    let key: String = bytes[key_start..i].iter().collect();
                    i += 2; // ="
                    let mut value = String::new();
                    while bytes[i] != '"' {
                        if bytes[i] == '\\' {
                            i += 1;
                            value.push(match bytes[i] {
                                'n' => '\n',
                                c => c,
                            });
                        } else {
                            value.push(bytes[i]);
                        }
                        i += 1;
                    }
                    i += 1;
                    if bytes[i] == ',' {
                        i += 1;
                    }
                    labels.insert(key, value);
                }
                let consumed: String = bytes[..i].iter().collect();
                (open, labels, line[open + 1 + consumed.len()..].trim().to_owned())
            }
            None => {
                let space = line.find(' ').unwrap();
                (space, BTreeMap::new(), line[space..].trim().to_owned())
            }
        };
        let value = rest.split(' ').next().unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push((line[..name_end].to_owned(), labels, value));
    }
    out
}

/// The value of the one series with `name` whose labels include all of `labels`.
pub fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Series> = series
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {} series",
        matching.len()
    );
    matching.first().map(|s| s.2)
}

pub fn names(series: &[Series]) -> std::collections::BTreeSet<String> {
    series.iter().map(|s| s.0.clone()).collect()
}
