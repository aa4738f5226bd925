//! The benchmarks' figures as pictures: SVG files beside their JSON in
//! `bench-results/`, drawn with plotters (its SVG backend writes text as
//! SVG text, so no font library is needed).

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: its name and its (x, y) points.
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Groups of bars: for each category (x), one bar per named value.
pub(crate) fn bars(
    file: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    values: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let y_max = values
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let groups = categories.len().max(1);
    let width = values.len().max(1);
    let root = SVGBackend::new(file, (860, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..groups as f64, 0f64..y_max)
        .map_err(err)?;
    let names = categories.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * 2 + 1)
        // A category's name under the middle of its group.
        .x_label_formatter(&|x| {
            names
                .iter()
                .zip(0u32..)
                .find(|(_, i)| (f64::from(*i) + 0.5 - x).abs() < 0.01)
                .map(|(name, _)| name.clone())
                .unwrap_or_default()
        })
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let slot = 0.8 / width as f64;
    for (j, (name, v)) in values.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        chart
            .draw_series(v.iter().enumerate().map(|(i, &y)| {
                let x0 = i as f64 + 0.1 + slot * j as f64;
                Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, y)], color.filled())
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
            "pps",
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
