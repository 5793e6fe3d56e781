//! Renders the fixture (qrlogin and peer rows as the harnesses write them)
//! and checks what a reader of the charts would look for.

use std::path::Path;

use qrlogin_charts::results;

fn fixture() -> Vec<results::Row> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixture.json"))
            .unwrap();
    results::parse(&text).unwrap()
}

#[test]
fn every_chart_is_written_with_its_labels_as_svg_text() {
    let rows = fixture();
    let dir = tempfile::tempdir().unwrap();
    let written = qrlogin_charts::render(&rows, dir.path()).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "latency-cdf-500.svg",
            "latency-cdf-1000.svg",
            "bytes-per-login.svg",
            "memory-per-waiting.svg",
            "requests-per-login.svg",
            "long-poll-round-robin.svg",
        ]
    );
    let cdf = std::fs::read_to_string(dir.path().join("latency-cdf-500.svg")).unwrap();
    assert!(cdf.starts_with("<svg"), "{}", &cdf[..80]);
    for label in [
        "qrlogin sse",
        "pushpin sse (no-rate-limit)",
        "socketio ws (redis-adapter)",
    ] {
        assert!(cdf.contains(label), "legend lacks {label}");
    }
    assert!(cdf.contains("<polyline"), "no CDF line drawn");
    let memory = std::fs::read_to_string(dir.path().join("memory-per-waiting.svg")).unwrap();
    assert!(memory.contains("65.4 KiB") && memory.contains("11.8 KiB"));
    // The stock Pushpin row only exists at 1,000/s: it is its own chart.
    let at_1000 = std::fs::read_to_string(dir.path().join("latency-cdf-1000.svg")).unwrap();
    assert!(at_1000.contains("pushpin sse (stock)") && !at_1000.contains("qrlogin sse"));
    let lp = std::fs::read_to_string(dir.path().join("long-poll-round-robin.svg")).unwrap();
    assert!(lp.contains("3%") && lp.contains("100%"));
}

#[test]
fn cdfs_rise_to_one_from_histograms_and_from_samples() {
    for row in fixture().iter().filter(|r| r.rate.is_some()) {
        let cdf = row.cdf();
        assert!(!cdf.is_empty(), "{}", row.label());
        assert!(
            cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
            "{} not monotonic",
            row.label()
        );
        assert!(
            (cdf.last().unwrap().1 - 1.0).abs() < 1e-9,
            "{} does not end at 1",
            row.label()
        );
    }
}

#[test]
fn rows_without_figures_are_left_out_not_drawn_as_zero() {
    let rows = fixture();
    let memory = results::one_per_label(&rows, |r| r.memory_per_conn_kib);
    assert!(memory.iter().all(|(label, _)| !label.contains("long-poll")));
    let empty: Vec<results::Row> = Vec::new();
    assert!(
        qrlogin_charts::render(&empty, tempfile::tempdir().unwrap().path())
            .unwrap()
            .is_empty()
    );
}
