//! The benchmarks' figures as pictures: SVG files beside their JSON in
//! `bench-results/`, drawn with plotters (its SVG backend writes text as
//! SVG text, so no font library is needed).

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: its name and its (x, y) points.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Lines against a common x axis, each point marked, with a legend.
pub(crate) fn lines(
    file: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = all().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(file, (860, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    // The legend goes to the upper corner the lines leave free: the right
    // one when they fall from left to right.
    let falling = series
        .iter()
        .filter_map(|s| Some((s.points.first()?.1, s.points.last()?.1)))
        .map(|(first, last)| first - last)
        .sum::<f64>()
        > 0.0;
    chart
        .configure_series_labels()
        .position(if falling {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// How a bar chart's y axis grows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Linear,
    /// Powers of ten, for values that differ by orders of magnitude (a
    /// millisecond beside seconds); values at or below zero are not drawn.
    Log,
}

/// Groups of bars: for each category (x), one bar per named value.
pub(crate) fn bars(
    file: &Path,
    title: &str,
    (y_desc, scale): (&str, Scale),
    categories: &[String],
    values: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let all = || values.iter().flat_map(|(_, v)| v.iter().copied());
    // On a log scale the chart's own coordinates are log10 of the values.
    let (y_min, y_max) = match scale {
        Scale::Linear => (0.0, all().fold(1.0, f64::max) * 1.1),
        Scale::Log => {
            let positive = || all().filter(|v| *v > 0.0).map(f64::log10);
            let lo = positive().fold(f64::INFINITY, f64::min);
            let hi = positive().fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() {
                (lo.floor() - 1.0, hi.ceil() + 0.5)
            } else {
                (0.0, 1.0)
            }
        }
    };
    let y = |v: f64| match scale {
        Scale::Linear => v,
        Scale::Log if v > 0.0 => v.log10(),
        Scale::Log => y_min,
    };
    let groups = categories.len().max(1);
    let width = values.len().max(1);
    // Room under each group for its name.
    let wide = u32::try_from(groups)
        .unwrap_or(u32::MAX)
        .saturating_mul(150)
        .saturating_add(200);
    let root = SVGBackend::new(file, (wide.max(860), 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups as f64, y_min..y_max)
        .map_err(err)?;
    // A category's name under the middle of its group.
    let category = |x: &f64| {
        categories
            .iter()
            .zip(0u32..)
            .find(|(_, i)| (f64::from(*i) + 0.5 - x).abs() < 0.01)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(&category)
        .y_desc(y_desc);
    let powers = |v: &f64| {
        let p = 10f64.powf(*v);
        if p >= 1.0 {
            format!("{p:.0}")
        } else {
            format!("{p}")
        }
    };
    if scale == Scale::Log {
        // Labels at whole powers of ten only.
        let steps = (y_max - y_min).floor();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a handful of decades"
        )]
        mesh.y_labels(steps as usize + 1).y_label_formatter(&powers);
    }
    mesh.draw().map_err(err)?;
    let slot = 0.8 / width as f64;
    for (j, (name, v)) in values.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        chart
            .draw_series(v.iter().enumerate().map(|(i, &value)| {
                let x0 = i as f64 + 0.1 + slot * j as f64;
                Rectangle::new([(x0, y_min), (x0 + slot * 0.9, y(value))], color.filled())
            }))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_bars_are_drawn_with_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("lines.svg");
        lines(
            &svg,
            "CPU per call",
            ("calls per second", "us"),
            &[
                Series {
                    name: "sipauth".to_owned(),
                    points: vec![(1000.0, 250.0), (2000.0, 240.0)],
                },
                Series {
                    name: "Kamailio".to_owned(),
                    points: vec![(1000.0, 150.0), (2000.0, 140.0)],
                },
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for s in [
            "<svg",
            "CPU per call",
            "sipauth",
            "Kamailio",
            "calls per second",
        ] {
            assert!(text.contains(s), "{s} missing");
        }
        let svg = dir.path().join("bars.svg");
        bars(
            &svg,
            "Drops",
            ("pps", Scale::Linear),
            &["xdp".to_owned(), "iptables".to_owned()],
            &[("dropped".to_owned(), vec![1e6, 5e5])],
        )
        .unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for s in ["Drops", "xdp", "iptables", "dropped", "<rect"] {
            assert!(text.contains(s), "{s} missing");
        }
    }
}
