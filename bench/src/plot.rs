//! The plots `make bench` draws beside BENCHMARKS.md, as SVG: where a distribution says
//! more than three percentiles, and where a run's course says more than its end.

use std::path::Path;

use plotters::prelude::*;

/// One line of a distribution plot: its label and its sorted samples (ms).
pub struct Series<'a> {
    /// What it is, for the legend.
    pub label: String,
    /// The samples, sorted ascending.
    pub sorted_ms: &'a [f64],
}

const COLOURS: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), BLACK];

/// Draws the latency distribution of each series (share of deliveries received within
/// x ms) to `path`, the x axis cut at the largest series' 99.9th percentile.
pub fn latency_cdf(path: &Path, title: &str, series: &[Series<'_>]) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .filter(|s| !s.sorted_ms.is_empty())
        .map(|s| crate::embedded::quantile(s.sorted_ms, 0.999))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let lines: Vec<Line> = series
        .iter()
        .map(|s| {
            let n = s.sorted_ms.len().max(1) as f64;
            let points =
                s.sorted_ms.iter().enumerate().map(|(k, ms)| (ms.min(x_max), (k + 1) as f64 * 100.0 / n)).collect();
            Line { label: s.label.clone(), points }
        })
        .collect();
    draw_lines(path, title, ("publish → receive (ms)", x_max), ("deliveries received (%)", 100.0), &lines)
}

/// One line of a plot: its label and its points, in order.
pub struct Line {
    /// What it is, for the legend.
    pub label: String,
    /// (x, y), e.g. (seconds since the start, count then).
    pub points: Vec<(f64, f64)>,
}

/// Draws counts over time to `path`: the slope of each line is its rate, so a stall or a
/// slowdown shows where it happened.
pub fn over_time(path: &Path, title: &str, y_desc: &str, lines: &[Line]) -> anyhow::Result<()> {
    let last = |f: fn(&(f64, f64)) -> f64| lines.iter().flat_map(|l| l.points.iter().map(f)).fold(1.0_f64, f64::max);
    let (x_max, y_max) = (last(|p| p.0) * 1.05, last(|p| p.1) * 1.05);
    draw_lines(path, title, ("seconds since the request", x_max), (y_desc, y_max), lines)
}

/// Draws `lines` to `path` on axes from 0 to each maximum, with a legend.
fn draw_lines(path: &Path, title: &str, x: (&str, f64), y: (&str, f64), lines: &[Line]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x.1, 0.0..y.1)
        .map_err(draw)?;
    chart.configure_mesh().x_desc(x.0).y_desc(y.0).draw().map_err(draw)?;
    for (i, l) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), colour.stroke_width(2)))
            .map_err(draw)?
            .label(l.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

/// The running count of `sorted` instants, read every `step` seconds: a line of a few
/// hundred points for any number of instants.
pub fn cumulative(sorted: &[f64], step: f64) -> Vec<(f64, f64)> {
    let Some(&end) = sorted.last() else { return Vec::new() };
    let mut points = vec![(0.0, 0.0)];
    let mut seen = 0;
    let mut t = step;
    while t < end + step {
        seen += sorted[seen..].partition_point(|&s| s <= t);
        points.push((t, seen as f64));
        t += step;
    }
    points
}

fn draw(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_count_is_read_at_each_step() {
        let points = cumulative(&[0.1, 0.2, 0.3, 1.0], 0.25);
        assert_eq!(points, [(0.0, 0.0), (0.25, 2.0), (0.5, 3.0), (0.75, 3.0), (1.0, 4.0)]);
        assert!(cumulative(&[], 0.25).is_empty());
    }
}
