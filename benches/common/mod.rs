//! Helpers shared by the benchmarks (included with `#[path]`, not a bench target itself).
#![allow(dead_code)]

use std::time::Instant;

/// The value of environment variable `name` parsed as T, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Best of `repeats` timings of `f`, in seconds.
pub fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
