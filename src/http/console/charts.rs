//! The overview's small charts, drawn by the server as SVG: bars over time (one stacked segment at most) and
//! horizontal shares. Only numbers reach the SVG; the templates print them escaped like everything else.

use chrono::{DateTime, Utc};

use super::views::When;

/// One bar of a chart, in SVG user units.
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub height: f64,
    /// A second segment stacked on top (failures), when the chart has one.
    pub y2: f64,
    pub height2: f64,
    pub label: String,
}

/// A small bar chart over time.
pub struct Chart {
    pub bars: Vec<Bar>,
    pub max: i64,
    pub total: i64,
    pub first: When,
    pub last: When,
}

pub const CHART_WIDTH: f64 = 600.0;
pub const CHART_HEIGHT: f64 = 100.0;

impl Chart {
    /// Bars of `(label, low, high)` values: `low` drawn first, `high` stacked on it.
    pub fn new(points: &[(DateTime<Utc>, i64, i64)], describe: impl Fn(i64, i64) -> String) -> Self {
        let max = points.iter().map(|(_, a, b)| a + b).max().unwrap_or(0);
        let width = CHART_WIDTH / points.len().max(1) as f64;
        let scale = if max == 0 { 0.0 } else { CHART_HEIGHT / max as f64 };
        let bars = points
            .iter()
            .enumerate()
            .map(|(i, (t, a, b))| {
                let height = *a as f64 * scale;
                let height2 = *b as f64 * scale;
                Bar {
                    x: i as f64 * width + 1.0,
                    y: CHART_HEIGHT - height,
                    height,
                    y2: CHART_HEIGHT - height - height2,
                    height2,
                    label: format!("{} UTC: {}", t.format("%H:%M"), describe(*a, *b)),
                }
            })
            .collect();
        let at = |p: Option<&(DateTime<Utc>, i64, i64)>| {
            let t = p.map(|p| p.0).unwrap_or_else(Utc::now);
            When { iso: t.to_rfc3339(), text: t.format("%H:%M UTC").to_string() }
        };
        Self {
            bars,
            max,
            total: points.iter().map(|(_, a, b)| a + b).sum(),
            first: at(points.first()),
            last: at(points.last()),
        }
    }
    pub fn bar_width(&self) -> f64 {
        (CHART_WIDTH / self.bars.len().max(1) as f64 - 2.0).max(1.0)
    }
}

/// One horizontal bar of a breakdown.
pub struct Share {
    pub name: String,
    pub count: i64,
    /// Width in percent of the largest.
    pub width: f64,
    pub class: &'static str,
}
