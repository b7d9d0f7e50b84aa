//! Per-pod tuning of the sidecar by annotation (`whisperer.dev/cpu`, `whisperer.dev/memory`,
//! `whisperer.dev/filter`), each bounded by the profile: a pod may ask for more or less within
//! what the platform team allowed, never beyond it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::{Overrides, QuantityRange};

pub const ANNOTATION_CPU: &str = "whisperer.dev/cpu";
pub const ANNOTATION_MEMORY: &str = "whisperer.dev/memory";
pub const ANNOTATION_FILTER: &str = "whisperer.dev/filter";

/// Longest capture filter a pod may pass (pcap-filter syntax).
pub const MAX_FILTER_LEN: usize = 512;

/// A Kubernetes quantity's value (cores or bytes); `None` when it is not one.
pub fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * scale)
}

fn in_range(what: &str, value: &str, range: Option<&QuantityRange>) -> Result<(), String> {
    let Some(range) = range else {
        return Err(format!(
            "annotation {what}={value:?} is not allowed: the profile sets no overrides.{} range",
            what.trim_start_matches("whisperer.dev/")
        ));
    };
    let v = quantity_value(value)
        .ok_or_else(|| format!("annotation {what}={value:?} is not a Kubernetes quantity"))?;
    let bound = |q: &Option<String>| q.as_deref().and_then(quantity_value);
    if bound(&range.min).is_some_and(|min| v < min) || bound(&range.max).is_some_and(|max| v > max)
    {
        return Err(format!(
            "annotation {what}={value:?} is outside the profile's range [{}, {}]",
            range.min.as_deref().unwrap_or("0"),
            range.max.as_deref().unwrap_or("unbounded")
        ));
    }
    Ok(())
}

fn set(resources: &mut Option<ResourceRequirements>, key: &str, value: &str, limit: bool) {
    let r = resources.get_or_insert_with(ResourceRequirements::default);
    let q = Quantity(value.to_string());
    r.requests
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), q.clone());
    if limit {
        r.limits
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), q);
    }
}

/// The pod asks for at least one override (so its sidecar differs from the profile's).
pub fn requested<'a>(get: impl Fn(&str) -> Option<&'a str>) -> bool {
    [ANNOTATION_CPU, ANNOTATION_MEMORY, ANNOTATION_FILTER]
        .into_iter()
        .any(|k| get(k).is_some())
}

/// Applies the pod's override annotations to `container`; an override the profile does not
/// allow, or a value outside its range, is an error saying which.
pub fn apply(
    container: &mut Container,
    annotations: Option<&BTreeMap<String, String>>,
    allowed: &Overrides,
) -> Result<(), String> {
    apply_with(
        container,
        |k| annotations.and_then(|a| a.get(k)).map(String::as_str),
        allowed,
    )
}

/// [`apply`], reading each annotation through `get` (any [`PodFacts`](super::PodFacts)).
pub fn apply_with<'a>(
    container: &mut Container,
    get: impl Fn(&str) -> Option<&'a str>,
    allowed: &Overrides,
) -> Result<(), String> {
    if let Some(cpu) = get(ANNOTATION_CPU) {
        in_range(ANNOTATION_CPU, cpu, allowed.cpu.as_ref())?;
        // A CPU limit throttles capture; only the request (scheduling share) is set.
        set(&mut container.resources, "cpu", cpu.trim(), false);
    }
    if let Some(memory) = get(ANNOTATION_MEMORY) {
        in_range(ANNOTATION_MEMORY, memory, allowed.memory.as_ref())?;
        set(&mut container.resources, "memory", memory.trim(), true);
    }
    if let Some(filter) = get(ANNOTATION_FILTER) {
        if !allowed.filter {
            return Err(format!(
                "annotation {ANNOTATION_FILTER} is not allowed: the profile does not set overrides.filter"
            ));
        }
        if filter.len() > MAX_FILTER_LEN || filter.chars().any(|c| c.is_control()) {
            return Err(format!(
                "annotation {ANNOTATION_FILTER} must be one line of at most {MAX_FILTER_LEN} characters"
            ));
        }
        let args = container.args.get_or_insert_with(Vec::new);
        args.push("--filter".into());
        args.push(filter.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_value("100m"), Some(0.1));
        assert_eq!(quantity_value("2"), Some(2.0));
        assert_eq!(quantity_value("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(quantity_value("1G"), Some(1e9));
        assert_eq!(quantity_value("1e3"), Some(1000.0));
        assert_eq!(quantity_value("0.5Gi"), Some(512.0 * 1024.0 * 1024.0));
        for bad in ["", "abc", "10Xi", "-1", "1..2"] {
            assert_eq!(quantity_value(bad), None, "{bad}");
        }
    }

    fn range(min: &str, max: &str) -> Option<QuantityRange> {
        Some(QuantityRange {
            min: Some(min.into()),
            max: Some(max.into()),
        })
    }

    #[test]
    fn overrides_within_bounds_apply_and_outside_are_refused() {
        let allowed = Overrides {
            cpu: range("10m", "500m"),
            memory: range("32Mi", "512Mi"),
            filter: true,
        };
        let ann: BTreeMap<String, String> = [
            (ANNOTATION_CPU, "200m"),
            (ANNOTATION_MEMORY, "256Mi"),
            (ANNOTATION_FILTER, "tcp port 80"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut c = Container::default();
        apply(&mut c, Some(&ann), &allowed).expect("within bounds");
        let r = c.resources.expect("resources");
        assert_eq!(r.requests.as_ref().expect("requests")["cpu"].0, "200m");
        assert_eq!(r.limits.as_ref().expect("limits")["memory"].0, "256Mi");
        assert!(!r.limits.as_ref().expect("limits").contains_key("cpu"));
        assert_eq!(
            c.args.as_deref(),
            Some(&["--filter".to_string(), "tcp port 80".to_string()][..])
        );

        for (k, v, words) in [
            (ANNOTATION_CPU, "2", "outside"),
            (ANNOTATION_MEMORY, "1Mi", "outside"),
            (ANNOTATION_MEMORY, "lots", "not a Kubernetes quantity"),
            (ANNOTATION_FILTER, "tcp\nport 80", "one line"),
        ] {
            let one: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = apply(&mut Container::default(), Some(&one), &allowed).expect_err(k);
            assert!(e.contains(words) && e.contains(k), "{e}");
        }
        let none = Overrides::default();
        let e = apply(&mut Container::default(), Some(&ann), &none).expect_err("not allowed");
        assert!(e.contains("not allowed"), "{e}");
        apply(&mut Container::default(), None, &none).expect("no annotations, nothing to check");
    }
}
