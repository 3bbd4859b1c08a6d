//! # rmb-metrics: one metrics design for the relay, the registrar and rmb-peer
//!
//! Every server owns a [`Registry`] and renders it at `GET /metrics` in the Prometheus
//! text format (0.0.4). Why per instance and not a process-global recorder (the
//! `metrics` facade): tests and `rmb up` run several relays, registrars and peers in one
//! process, and each must report its own numbers; a global recorder mixes them, and a
//! host that installed its own first leaves the server with nothing to serve.
//!
//! Why label sets are bounded: label values often come from outside (a route a stranger
//! asked for, a relay name a twin registered), and every distinct value is a series
//! that memory and the scraper's storage keep forever. A labelled family holds at most
//! `max_series` series; after that, new combinations are counted in one series whose
//! values are all `other` ([`OTHER`]). Values are escaped when rendered, so none can
//! break out of its quotes.
//!
//! Handles ([`Counter`], [`Gauge`], [`Histogram`]) are cheap clones of an atomic cell:
//! take one once and update it on hot paths without locks or lookups.
//!
//! ```
//! let registry = rmb_metrics::Registry::new();
//! let sent = registry.counter("app_sent_total", "Messages sent.");
//! let errors = registry.counter_vec("app_errors_total", "Errors by kind.", &["kind"]);
//! sent.inc();
//! errors.inc(&["timeout"]);
//! let text = registry.render();
//! assert!(text.contains("app_sent_total 1\n"));
//! assert!(text.contains("app_errors_total{kind=\"timeout\"} 1\n"));
//! ```

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The label value that stands for every combination past a family's `max_series`.
pub const OTHER: &str = "other";

/// Series a labelled family keeps by default before folding new ones into [`OTHER`].
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// A server's metrics. Cheap to clone; clones share the families.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<Vec<Arc<dyn Family>>>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// A counter that only goes up.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        let counter = Counter::default();
        self.add(Arc::new(Single {
            meta: Meta::new(name, help, Kind::Counter),
            cell: SingleCell::Counter(counter.clone()),
        }));
        counter
    }

    /// A value that goes up and down (open connections, queue depth).
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        let gauge = Gauge::default();
        self.add(Arc::new(Single {
            meta: Meta::new(name, help, Kind::Gauge),
            cell: SingleCell::Gauge(gauge.clone()),
        }));
        gauge
    }

    /// A series computed when rendered, with fixed labels: for values that are already
    /// kept elsewhere (a sum of two counters under an older name, a map's length).
    pub fn computed(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [(&'static str, &'static str)],
        value: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
        let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
        self.add(Arc::new(Computed {
            meta: Meta::new(name, help, kind),
            labels: label_text(&names, &values),
            value: Box::new(value),
        }));
    }

    /// Counters by label values, at most [`DEFAULT_MAX_SERIES`] series.
    pub fn counter_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        self.counter_vec_capped(name, help, labels, DEFAULT_MAX_SERIES)
    }

    /// Counters by label values, at most `max_series` series (then [`OTHER`]).
    pub fn counter_vec_capped(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        max_series: usize,
    ) -> CounterVec {
        let family = Arc::new(Labelled::new(
            Meta::new(name, help, Kind::Counter),
            labels,
            max_series,
            || Arc::new(AtomicU64::new(0)),
        ));
        self.add(family.clone());
        CounterVec(family)
    }

    /// Gauges by label values, at most [`DEFAULT_MAX_SERIES`] series.
    pub fn gauge_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> GaugeVec {
        let family = Arc::new(Labelled::new(
            Meta::new(name, help, Kind::Gauge),
            labels,
            DEFAULT_MAX_SERIES,
            || Arc::new(AtomicI64::new(0)),
        ));
        self.add(family.clone());
        GaugeVec(family)
    }

    /// Histograms by label values with the upper bounds `buckets` (ascending; `+Inf`
    /// is implied), at most [`DEFAULT_MAX_SERIES`] series.
    pub fn histogram_vec(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> HistogramVec {
        debug_assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}: buckets");
        let family = Arc::new(Labelled::new(
            Meta::new(name, help, Kind::Histogram),
            labels,
            DEFAULT_MAX_SERIES,
            move || Arc::new(HistogramCell::new(buckets)),
        ));
        self.add(family.clone());
        HistogramVec(family)
    }

    fn add(&self, family: Arc<dyn Family>) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        // Two families of one name make Prometheus reject the whole scrape: a bug in
        // the server that registered them, caught by its tests.
        debug_assert!(
            families.iter().all(|f| f.meta().name != family.meta().name),
            "metric {} registered twice",
            family.meta().name
        );
        families.push(family);
    }

    fn families(&self) -> Vec<Arc<dyn Family>> {
        self.families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The Prometheus text of every family, in the order they were registered; the
    /// series of a labelled family sorted by their labels.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut samples = Vec::new();
        for family in self.families() {
            let meta = family.meta();
            let _ = writeln!(out, "# HELP {} {}", meta.name, meta.help);
            let _ = writeln!(out, "# TYPE {} {}", meta.name, meta.kind.as_str());
            samples.clear();
            family.collect(&mut samples);
            for sample in &samples {
                let _ = write!(out, "{}{}", meta.name, sample.suffix);
                if !sample.labels.is_empty() {
                    let _ = write!(out, "{{{}}}", sample.labels);
                }
                let _ = writeln!(out, " {}", sample.value);
            }
        }
        out
    }

    /// The value of one rendered series: `name` with its suffix (`_bucket`, `_sum`,
    /// `_count` for histograms) and `labels` as rendered (`reason="expired"`, empty for
    /// none). For tests and for servers that read their own numbers.
    pub fn sample(&self, name: &str, labels: &str) -> Option<f64> {
        let mut samples = Vec::new();
        for family in self.families() {
            let Some(suffix) = name.strip_prefix(family.meta().name) else {
                continue;
            };
            samples.clear();
            family.collect(&mut samples);
            if let Some(s) = samples
                .iter()
                .find(|s| s.suffix == suffix && s.labels == labels)
            {
                return Some(s.value.as_f64());
            }
        }
        None
    }
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A counter: only goes up.
#[derive(Clone, Default, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge: set, or moved up and down.
#[derive(Clone, Default, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.add(-1);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// One histogram series.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCell>);

impl Histogram {
    /// Records one observation (seconds, bytes, ...). NaN is ignored: it would make the
    /// sum NaN forever.
    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }

    /// Observations recorded so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Counters by label values.
#[derive(Clone)]
pub struct CounterVec(Arc<Labelled<AtomicU64>>);

impl CounterVec {
    /// The series for `values` (one per label name, in order), to keep and update.
    pub fn with(&self, values: &[&str]) -> Counter {
        Counter(self.0.series(values))
    }

    pub fn inc(&self, values: &[&str]) {
        self.0.series(values).fetch_add(1, Relaxed);
    }

    pub fn add(&self, values: &[&str], n: u64) {
        self.0.series(values).fetch_add(n, Relaxed);
    }

    /// The current value for `values` (0 if never counted), without creating a series.
    pub fn get(&self, values: &[&str]) -> u64 {
        self.0.peek(values).map_or(0, |c| c.load(Relaxed))
    }
}

/// Gauges by label values.
#[derive(Clone)]
pub struct GaugeVec(Arc<Labelled<AtomicI64>>);

impl GaugeVec {
    pub fn with(&self, values: &[&str]) -> Gauge {
        Gauge(self.0.series(values))
    }

    pub fn set(&self, values: &[&str], value: i64) {
        self.0.series(values).store(value, Relaxed);
    }

    pub fn get(&self, values: &[&str]) -> i64 {
        self.0.peek(values).map_or(0, |c| c.load(Relaxed))
    }
}

/// Histograms by label values.
#[derive(Clone)]
pub struct HistogramVec(Arc<Labelled<HistogramCell>>);

impl HistogramVec {
    pub fn with(&self, values: &[&str]) -> Histogram {
        Histogram(self.0.series(values))
    }

    pub fn observe(&self, values: &[&str], value: f64) {
        self.0.series(values).observe(value);
    }
}

/// Label values from outside used in several families (relay names twins registered):
/// the first `cap` distinct ones are used as they are, made safe with host-name
/// characters only (others become `_`, at most 64 characters), later ones as
/// [`OTHER`]. Why a bound of its own beside `max_series`: so every family that names a
/// relay names the same ones.
pub struct BoundedLabels {
    cap: usize,
    admitted: Mutex<std::collections::HashSet<String>>,
}

impl BoundedLabels {
    pub fn new(cap: usize) -> Self {
        BoundedLabels {
            cap,
            admitted: Mutex::default(),
        }
    }

    /// The label value to use for `value`.
    pub fn value(&self, value: &str) -> String {
        let safe: String = value
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_:[]".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if admitted.contains(&safe) {
            return safe;
        }
        if admitted.len() < self.cap {
            admitted.insert(safe.clone());
            return safe;
        }
        OTHER.into()
    }
}

// Handles name their family (their values are in `render`).
macro_rules! debug_by_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.0.meta.name).finish()
            }
        }
    )*};
}
debug_by_name!(CounterVec, GaugeVec, HistogramVec);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.families().iter().map(|f| f.meta().name).collect();
        f.debug_struct("Registry")
            .field("families", &names)
            .finish()
    }
}

// ---- families ----

struct Meta {
    name: &'static str,
    help: &'static str,
    kind: Kind,
}

impl Meta {
    fn new(name: &'static str, help: &'static str, kind: Kind) -> Meta {
        debug_assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        Meta { name, help, kind }
    }
}

struct Sample {
    suffix: &'static str,
    labels: String,
    value: Value,
}

enum Value {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl Value {
    fn as_f64(&self) -> f64 {
        match *self {
            Value::Unsigned(v) => v as f64,
            Value::Signed(v) => v as f64,
            Value::Float(v) => v,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Unsigned(v) => write!(f, "{v}"),
            Value::Signed(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{}", float_text(v)),
        }
    }
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

trait Family: Send + Sync {
    fn meta(&self) -> &Meta;
    fn collect(&self, out: &mut Vec<Sample>);
}

enum SingleCell {
    Counter(Counter),
    Gauge(Gauge),
}

struct Single {
    meta: Meta,
    cell: SingleCell,
}

impl Family for Single {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        let value = match &self.cell {
            SingleCell::Counter(c) => Value::Unsigned(c.get()),
            SingleCell::Gauge(g) => Value::Signed(g.get()),
        };
        out.push(Sample {
            suffix: "",
            labels: String::new(),
            value,
        });
    }
}

type ComputeFn = Box<dyn Fn() -> i64 + Send + Sync>;

struct Computed {
    meta: Meta,
    labels: String,
    value: ComputeFn,
}

impl Family for Computed {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        out.push(Sample {
            suffix: "",
            labels: self.labels.clone(),
            value: Value::Signed((self.value)()),
        });
    }
}

/// What a labelled family keeps per series.
trait Cell: Send + Sync {
    fn collect(&self, labels: &str, out: &mut Vec<Sample>);
}

impl Cell for AtomicU64 {
    fn collect(&self, labels: &str, out: &mut Vec<Sample>) {
        out.push(Sample {
            suffix: "",
            labels: labels.to_string(),
            value: Value::Unsigned(self.load(Relaxed)),
        });
    }
}

impl Cell for AtomicI64 {
    fn collect(&self, labels: &str, out: &mut Vec<Sample>) {
        out.push(Sample {
            suffix: "",
            labels: labels.to_string(),
            value: Value::Signed(self.load(Relaxed)),
        });
    }
}

#[derive(Debug)]
struct HistogramCell {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as f64 bits.
    sum: AtomicU64,
}

impl HistogramCell {
    fn new(bounds: &'static [f64]) -> HistogramCell {
        HistogramCell {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }
}

impl Cell for HistogramCell {
    fn collect(&self, labels: &str, out: &mut Vec<Sample>) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        let bounds = self.bounds.iter().map(|b| float_text(*b));
        for (count, bound) in self.counts.iter().zip(bounds.chain(["+Inf".into()])) {
            cumulative = cumulative.saturating_add(count.load(Relaxed));
            out.push(Sample {
                suffix: "_bucket",
                labels: format!("{labels}{sep}le=\"{bound}\""),
                value: Value::Unsigned(cumulative),
            });
        }
        out.push(Sample {
            suffix: "_sum",
            labels: labels.to_string(),
            value: Value::Float(f64::from_bits(self.sum.load(Relaxed))),
        });
        out.push(Sample {
            suffix: "_count",
            labels: labels.to_string(),
            value: Value::Unsigned(cumulative),
        });
    }
}

type MakeCell<C> = Box<dyn Fn() -> Arc<C> + Send + Sync>;

struct Labelled<C> {
    meta: Meta,
    names: &'static [&'static str],
    max_series: usize,
    make: MakeCell<C>,
    series: RwLock<HashMap<Box<[String]>, Arc<C>>>,
}

impl<C: Cell> Labelled<C> {
    fn new(
        meta: Meta,
        names: &'static [&'static str],
        max_series: usize,
        make: impl Fn() -> Arc<C> + Send + Sync + 'static,
    ) -> Self {
        Labelled {
            meta,
            names,
            max_series,
            make: Box::new(make),
            series: RwLock::default(),
        }
    }

    /// The key for `values`: exactly one value per label name (missing ones empty,
    /// extra ones ignored), so a caller's mistake cannot produce a malformed series.
    fn key(&self, values: &[&str]) -> Box<[String]> {
        (0..self.names.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_string())
            .collect()
    }

    fn peek(&self, values: &[&str]) -> Option<Arc<C>> {
        let key = self.key(values);
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        series.get(&key).cloned()
    }

    fn series(&self, values: &[&str]) -> Arc<C> {
        let key = self.key(values);
        if let Some(cell) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return cell.clone();
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = series.get(&key) {
            return cell.clone();
        }
        let key = if series.len() < self.max_series {
            key
        } else {
            self.names.iter().map(|_| OTHER.to_string()).collect()
        };
        series.entry(key).or_insert_with(|| (self.make)()).clone()
    }
}

impl<C: Cell> Family for Labelled<C> {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        let mut rows: Vec<(String, Arc<C>)> = {
            let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
            series
                .iter()
                .map(|(values, cell)| (label_text(self.names, values), cell.clone()))
                .collect()
        };
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, cell) in rows {
            cell.collect(&labels, out);
        }
    }
}

/// `a="x",b="y"`, values escaped as the text format requires (`\`, `"`, newline).
fn label_text<S: AsRef<str>>(names: &[&str], values: &[S]) -> String {
    let mut text = String::new();
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(name);
        text.push_str("=\"");
        for c in value.as_ref().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_their_values() {
        let r = Registry::new();
        let c = r.counter("x_total", "X.");
        let g = r.gauge("open", "Open.");
        c.add(3);
        g.inc();
        g.inc();
        g.dec();
        let text = r.render();
        assert!(
            text.contains("# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE open gauge\nopen 1\n"), "{text}");
        assert_eq!(r.sample("x_total", ""), Some(3.0));
        assert_eq!(r.sample("x_total", "a=\"b\""), None);
    }

    #[test]
    fn registries_are_independent() {
        let (a, b) = (Registry::new(), Registry::new());
        a.counter("n_total", "N.").inc();
        b.counter("n_total", "N.");
        assert_eq!(a.sample("n_total", ""), Some(1.0));
        assert_eq!(b.sample("n_total", ""), Some(0.0));
    }

    #[test]
    fn labelled_series_are_sorted_and_escaped() {
        let r = Registry::new();
        let v = r.counter_vec("req_total", "Requests.", &["route", "status"]);
        v.inc(&["/b", "200"]);
        v.add(&["/a", "404"], 2);
        v.inc(&["x\"} 1\nevil\\", "200"]);
        let text = r.render();
        let a = text
            .find("req_total{route=\"/a\",status=\"404\"} 2\n")
            .unwrap();
        let b = text
            .find("req_total{route=\"/b\",status=\"200\"} 1\n")
            .unwrap();
        assert!(a < b, "{text}");
        assert!(
            text.contains("req_total{route=\"x\\\"} 1\\nevil\\\\\",status=\"200\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.contains("evil")).count(), 1);
        assert_eq!(v.get(&["/a", "404"]), 2);
        assert_eq!(v.get(&["/c", "404"]), 0);
    }

    #[test]
    fn series_past_the_cap_are_counted_as_other() {
        let r = Registry::new();
        let v = r.counter_vec_capped("k_total", "K.", &["kind"], 2);
        for i in 0..10 {
            v.inc(&[&format!("k{i}")]);
        }
        v.inc(&["k0"]);
        assert_eq!(v.get(&["k0"]), 2, "admitted series stay");
        assert_eq!(v.get(&["k1"]), 1);
        assert_eq!(v.get(&[OTHER]), 8);
        assert_eq!(
            r.render()
                .lines()
                .filter(|l| l.starts_with("k_total"))
                .count(),
            3
        );
    }

    #[test]
    fn wrong_label_counts_still_render_one_value_per_name() {
        let r = Registry::new();
        let v = r.counter_vec("w_total", "W.", &["a", "b"]);
        v.inc(&["x"]);
        v.inc(&["x", "y", "z"]);
        assert_eq!(r.sample("w_total", "a=\"x\",b=\"\""), Some(1.0));
        assert_eq!(r.sample("w_total", "a=\"x\",b=\"y\""), Some(1.0));
    }

    #[test]
    fn histograms_are_cumulative() {
        let r = Registry::new();
        let h = r.histogram_vec("d_seconds", "D.", &["op"], &[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 7.0, f64::NAN] {
            h.observe(&["get"], v);
        }
        let s = |name: &str, labels: &str| r.sample(name, labels);
        assert_eq!(s("d_seconds_bucket", "op=\"get\",le=\"0.1\""), Some(2.0));
        assert_eq!(s("d_seconds_bucket", "op=\"get\",le=\"1\""), Some(3.0));
        assert_eq!(s("d_seconds_bucket", "op=\"get\",le=\"+Inf\""), Some(4.0));
        assert_eq!(s("d_seconds_count", "op=\"get\""), Some(4.0));
        assert_eq!(s("d_seconds_sum", "op=\"get\""), Some(7.65));
        assert!(r.render().contains("# TYPE d_seconds histogram\n"));
        assert_eq!(h.with(&["get"]).count(), 4);
    }

    #[test]
    fn computed_series_read_their_source_when_rendered() {
        let r = Registry::new();
        let c = r.counter("src_total", "Source.");
        let source = c.clone();
        r.computed(
            "old_name",
            "Old.",
            Kind::Counter,
            &[("worker", "0")],
            move || source.get() as i64 * 2,
        );
        c.add(2);
        assert!(r.render().contains("old_name{worker=\"0\"} 4\n"));
    }

    #[test]
    fn bounded_label_values_are_safe_and_capped() {
        let labels = BoundedLabels::new(2);
        assert_eq!(labels.value("a\"} 1\nevil"), "a___1_evil");
        assert_eq!(labels.value("b:80"), "b:80");
        assert_eq!(labels.value("c"), OTHER);
        assert_eq!(labels.value("b:80"), "b:80", "admitted values stay");
        assert_eq!(labels.value(&"x".repeat(100)), OTHER);
    }
}
