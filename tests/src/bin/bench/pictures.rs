//! Each part's pictures, drawn from the JSON the part wrote: a part draws
//! its own after writing its file, and `sipauth-bench pictures` draws
//! every part's again from the files in `bench-results/` (no rig, no
//! root), so the pictures always show the figures beside them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::FAILURE_LIMIT;
use crate::plot::{self, Scale, Series};

/// Parts with pictures, and how each draws them.
const DRAWN: [(&str, Draw); 7] = [
    ("inbound", inbound),
    ("outbound", outbound),
    ("kamailio", kamailio),
    ("xdp-flood", xdp_flood),
    ("reflection", reflection),
    ("propagation", propagation),
    ("fleet", fleet),
];

/// Draws a part's pictures from its JSON into the directory; returns the
/// files written.
type Draw = fn(&Value, &Path) -> anyhow::Result<Vec<PathBuf>>;

/// Draws the pictures of `part` from `out/{part}.json` and says where.
pub(crate) fn draw(out: &Path, part: &str) -> anyhow::Result<()> {
    let Some((_, draw)) = DRAWN.iter().find(|(name, _)| *name == part) else {
        return Ok(());
    };
    let file = out.join(format!("{part}.json"));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    for svg in draw(&json, out).with_context(|| format!("drawing {}", file.display()))? {
        println!("drawn to {}", svg.display());
    }
    Ok(())
}

/// Draws every part's pictures whose JSON is in `out`.
pub(crate) fn draw_all(out: &Path) -> anyhow::Result<()> {
    for (part, _) in DRAWN {
        if out.join(format!("{part}.json")).exists() {
            draw(out, part)?;
        }
    }
    Ok(())
}

/// The number under `key`, or under a JSON pointer (`/setup_latency/p99_ms`).
fn num(v: &Value, key: &str) -> anyhow::Result<f64> {
    let found = if key.starts_with('/') {
        v.pointer(key)
    } else {
        v.get(key)
    };
    found
        .and_then(Value::as_f64)
        .with_context(|| format!("no number {key:?}"))
}

fn text<'v>(v: &'v Value, key: &str) -> anyhow::Result<&'v str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("no text {key:?}"))
}

fn list<'v>(v: &'v Value, key: &str) -> anyhow::Result<&'v [Value]> {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .with_context(|| format!("no list {key:?}"))
}

/// One line against the rate asked: `y` of each step the system kept up
/// with, within `limit` failed and at least [`KEPT_UP`] of the rate asked
/// completed. Past its capacity a system still completes the calls asked,
/// later: such a step's CPU and latency describe a queue, and its place on
/// the rate axis would be the rate asked, not the one served.
fn by_rate(name: &str, steps: &[Value], limit: f64, y: &str) -> anyhow::Result<Series> {
    let mut points = Vec::new();
    for s in steps {
        let asked = num(s, "rate_asked")?;
        if num(s, "failure_share")? <= limit && num(s, "rate_achieved")? >= KEPT_UP * asked {
            points.push((asked, num(s, y)?));
        }
    }
    Ok(Series {
        name: name.to_owned(),
        points,
    })
}

/// The share of the rate asked a step must complete to be drawn.
const KEPT_UP: f64 = 0.95;

const RATE: &str = "calls per second asked (steps the system kept up with)";

fn inbound(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let steps = list(j, "setups")?;
    let cpu = out.join("inbound-cpu.svg");
    plot::lines(
        &cpu,
        "Edge CPU per authenticated inbound call, everything included, one CPU",
        (RATE, "us of CPU per call"),
        &[by_rate(
            "sipauth",
            steps,
            FAILURE_LIMIT,
            "edge_cpu_us_per_call",
        )?],
    )?;
    let latency = out.join("inbound-latency.svg");
    plot::lines(
        &latency,
        "Call setup (first INVITE to 603), packet timestamps",
        (RATE, "ms"),
        &[
            by_rate("p50", steps, FAILURE_LIMIT, "wire_setup_p50_ms")?,
            by_rate("p99", steps, FAILURE_LIMIT, "wire_setup_p99_ms")?,
        ],
    )?;
    let mut files = vec![cpu, latency];
    let flood = list(j, "under_flood")?;
    if !flood.is_empty() {
        let mut modes = Vec::new();
        let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
        for f in flood {
            modes.push(format!("XDP {}", text(f, "xdp_mode")?));
            quiet.push(num(f, "no_flood_wire_p99_ms")?);
            flooded.push(num(f, "legitimate_wire_p99_ms")?);
        }
        let file = out.join("inbound-flood.svg");
        plot::bars(
            &file,
            "Legitimate calls' p99 setup beside a locked-out source's flood",
            ("ms (log scale)", Scale::Log),
            &modes,
            &[
                ("p99 without the flood".to_owned(), quiet),
                ("p99 under the flood".to_owned(), flooded),
            ],
        )?;
        files.push(file);
    }
    Ok(files)
}

fn outbound(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let steps = list(j, "steps")?;
    let limit = num(j, "failure_limit_share")?;
    let cpu = out.join("outbound-cpu.svg");
    plot::lines(
        &cpu,
        "Edge CPU per Make Call (API request to hangup_url), one CPU",
        (RATE, "us of CPU per call"),
        &[by_rate("sipauth", steps, limit, "edge_cpu_us_per_call")?],
    )?;
    let latency = out.join("outbound-latency.svg");
    plot::lines(
        &latency,
        "Make Call: request to 201, and request to answer_url",
        (RATE, "ms"),
        &[
            by_rate("API p99", steps, limit, "/api_latency/p99_ms")?,
            by_rate("setup p50", steps, limit, "/setup_latency/p50_ms")?,
            by_rate("setup p99", steps, limit, "/setup_latency/p99_ms")?,
        ],
    )?;
    Ok(vec![cpu, latency])
}

fn kamailio(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let systems = [
        ("sipauth (all included)", "sipauth"),
        ("Kamailio stateless", "kamailio_stateless"),
        ("Kamailio stateful + nonce_count", "kamailio_stateful"),
    ];
    let rows = list(j, "by_rate")?;
    // The medians over the rounds; a rate no round kept up with has none.
    let series = |figure: &str| -> anyhow::Result<Vec<Series>> {
        systems
            .iter()
            .map(|(name, key)| {
                let mut points = Vec::new();
                for r in rows {
                    if let Some(y) = r[format!("{key}_{figure}")].as_f64() {
                        points.push((num(r, "rate_asked")?, y));
                    }
                }
                Ok(Series {
                    name: (*name).to_owned(),
                    points,
                })
            })
            .collect()
    };
    let cpu = out.join("kamailio-cpu.svg");
    plot::lines(
        &cpu,
        "Server CPU per authenticated call, one CPU each (median of the rounds)",
        (RATE, "us of CPU per call"),
        &series("cpu_us_per_call")?,
    )?;
    let p99 = out.join("kamailio-p99.svg");
    plot::lines(
        &p99,
        "p99 call setup (first INVITE to 603), packet timestamps (median of the rounds)",
        (RATE, "ms"),
        &series("p99_ms")?,
    )?;
    Ok(vec![cpu, p99])
}

fn xdp_flood(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut modes = Vec::new();
    let (mut dropped, mut reached) = (Vec::new(), Vec::new());
    for r in list(j, "results")? {
        modes.push(text(r, "mode")?.to_owned());
        dropped.push(num(r, "dropped_pps")?);
        reached.push(num(r, "reached_user_space_pps")?);
    }
    let file = out.join("xdp-flood.svg");
    plot::bars(
        &file,
        "A locked-out source's INVITE flood: where it is dropped",
        ("packets per second", Scale::Linear),
        &modes,
        &[
            ("dropped before user space".to_owned(), dropped),
            ("reached user space".to_owned(), reached),
        ],
    )?;
    Ok(vec![file])
}

fn reflection(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut cases = Vec::new();
    let (mut datagrams, mut bytes) = (Vec::new(), Vec::new());
    for r in list(j, "results")? {
        let budget = num(r, "unproven_replies_per_sec")?;
        let budget = if budget >= 1e6 {
            "no budget".to_owned()
        } else {
            format!("{budget:.0}/s")
        };
        cases.push(format!(
            "{}, XDP {}, {budget}",
            text(r, "application")?,
            text(r, "xdp")?
        ));
        datagrams.push(num(r, "replies_per_request_received")?);
        bytes.push(num(r, "reply_bytes_per_request_byte_received")?);
    }
    let file = out.join("reflection.svg");
    plot::bars(
        &file,
        "Forged INVITEs: what the edge sends back per request received",
        ("replies per request", Scale::Linear),
        &cases,
        &[
            ("datagrams per datagram".to_owned(), datagrams),
            ("bytes per byte".to_owned(), bytes),
        ],
    )?;
    Ok(vec![file])
}

fn propagation(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let results = list(j, "results")?;
    let mut backends = Vec::new();
    let by =
        |key: &str| -> anyhow::Result<Vec<f64>> { results.iter().map(|r| num(r, key)).collect() };
    let values = vec![
        ("p50".to_owned(), by("p50_ms")?),
        ("p99".to_owned(), by("p99_ms")?),
        ("max".to_owned(), by("max_ms")?),
    ];
    for r in results {
        backends.push(format!("control plane on {}", text(r, "backend")?));
    }
    let file = out.join("propagation.svg");
    plot::bars(
        &file,
        "An ACL entry's change, API write to a remote edge's view",
        ("ms", Scale::Linear),
        &backends,
        &values,
    )?;
    Ok(vec![file])
}

fn fleet(j: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let spread = j.get("lockout_spread_ms").context("no lockout_spread_ms")?;
    let file = out.join("fleet.svg");
    plot::bars(
        &file,
        "A lockout's spread: tenth failure at one edge to the others' kernel maps",
        ("ms", Scale::Linear),
        &[format!("{:.0} sources", num(spread, "sources")?)],
        &[
            ("p50".to_owned(), vec![num(spread, "p50")?]),
            ("p99".to_owned(), vec![num(spread, "p99")?]),
            ("max".to_owned(), vec![num(spread, "max")?]),
        ],
    )?;
    Ok(vec![file])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed result draws, and each picture names its figures.
    #[test]
    fn committed_results_draw() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
        let dir = tempfile::tempdir().unwrap();
        for (part, _) in DRAWN {
            let json = results.join(format!("{part}.json"));
            if !json.exists() {
                continue;
            }
            std::fs::copy(&json, dir.path().join(format!("{part}.json"))).unwrap();
        }
        draw_all(dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("inbound-cpu.svg")).unwrap();
        assert!(svg.contains("us of CPU per call") && svg.contains("sipauth"));
    }

    #[test]
    fn steps_past_capacity_are_left_out() {
        let steps: Vec<Value> = serde_json::from_str(
            r#"[{"rate_asked": 1000, "rate_achieved": 999, "failure_share": 0.0, "edge_cpu_us_per_call": 100},
                {"rate_asked": 2000, "rate_achieved": 2000, "failure_share": 0.02, "edge_cpu_us_per_call": 300},
                {"rate_asked": 4000, "rate_achieved": 3000, "failure_share": 0.0, "edge_cpu_us_per_call": 90}]"#,
        )
        .unwrap();
        let s = by_rate("x", &steps, 0.01, "edge_cpu_us_per_call").unwrap();
        assert_eq!(s.points, vec![(1000.0, 100.0)]);
        let e = by_rate("x", &steps, 0.01, "missing").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
