//! Reading Prometheus text: from a registry in the test process, or a scraped body.

use prometheus_client::registry::Registry;

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode metrics");
    out
}

/// Sum of every sample of `name` whose line contains `filter` (`""`: all of them).
pub fn sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the sample `series` (name and labels, exactly), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The cumulative buckets `(le, count)` of histogram `name` (without `_bucket`), summed over
/// every series whose line contains each of `filters`, sorted by `le`.
pub fn buckets(text: &str, name: &str, filters: &[&str]) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        if !filters.iter().all(|f| line.contains(f)) {
            continue;
        }
        let Some(le) = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|v| {
                if v == "+Inf" {
                    Some(f64::INFINITY)
                } else {
                    v.parse::<f64>().ok()
                }
            })
        else {
            continue;
        };
        let Some(count) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match by_le.iter_mut().find(|(l, _)| *l == le) {
            Some((_, c)) => *c += count,
            None => by_le.push((le, count)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

/// `histogram_quantile(q, ...)` as Prometheus computes it (linear interpolation inside the
/// bucket; the highest finite bound if the rank falls in `+Inf`) over the observations made
/// between two scrapes of the same histogram. `None` without observations.
pub fn quantile_between(
    before: &str,
    after: &str,
    name: &str,
    filters: &[&str],
    q: f64,
) -> Option<f64> {
    let old = buckets(before, name, filters);
    let delta: Vec<(f64, f64)> = buckets(after, name, filters)
        .into_iter()
        .map(|(le, c)| {
            let was = old.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
            (le, c - was)
        })
        .collect();
    quantile(&delta, q)
}

/// `histogram_quantile` of cumulative buckets.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let width = count - below;
            let into = if width > 0.0 {
                (rank - below) / width
            } else {
                1.0
            };
            return Some(lower + (le - lower) * into);
        }
        lower = le;
        below = count;
    }
    Some(lower)
}
