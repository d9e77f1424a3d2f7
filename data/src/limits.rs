//! Upper bounds on the counts a user sets (resamples, random runs, directions), and the
//! machine's memory for the checks that size a stage's buffers. A mistyped count (an extra
//! few zeros) should be refused with its name and the bound, not run for days or abort when
//! an allocation fails.

/// The most bootstrap resamples any stage draws: an interval's Monte Carlo error shrinks as
/// 1/√B, so beyond this it is far below the sampling error the interval describes.
pub const MOST_BOOTSTRAP: usize = 100_000;

/// Why [`MOST_BOOTSTRAP`], for messages.
pub const BOOTSTRAP_WHY: &str = "resamples of each interval; at 100,000 the resampling error of \
     a 95% percentile bound is about 0.2% of the interval's width (2% at the default 1,000)";

/// The most random baselines (TCAV's random concepts, the causal stage's random directions):
/// each is a fitted CAV or a steered forward, and the tests' power has long levelled off.
pub const MOST_RANDOM_RUNS: usize = 10_000;

/// `Err(message)` when `value` exceeds `most`: "`name` = value; at most most (why)".
pub fn at_most(name: &str, value: usize, most: usize, why: &str) -> Result<(), String> {
    if value > most {
        Err(format!("{name} = {value}; at most {most} ({why})"))
    } else {
        Ok(())
    }
}

/// `Err(message)` when the list `name` holds one item twice: it would be computed twice, its
/// rows written twice under one key, and a multiple-testing correction would count it twice.
pub fn each_once<T: PartialEq + std::fmt::Display>(name: &str, items: &[T]) -> Result<(), String> {
    match first_repeat_by(items, |a, b| a == b) {
        Some((_, i)) => Err(format!("{name} lists `{}` twice; list each once", items[i])),
        None => Ok(()),
    }
}

/// The first `(earlier, later)` pair of indices whose items are the `same` (for items compared
/// by what they resolve to, e.g. two target specs naming one class).
pub fn first_repeat_by<T>(items: &[T], same: impl Fn(&T, &T) -> bool) -> Option<(usize, usize)> {
    (0..items.len()).find_map(|i| (0..i).find(|&j| same(&items[j], &items[i])).map(|j| (j, i)))
}

/// [`at_most`] for a stage's random baselines (`runs_name`: TCAV's `random_runs`, the causal
/// stage's `random_directions`) and its bootstrap resamples together.
pub fn baselines_and_resamples(
    runs_name: &str,
    runs: usize,
    runs_why: &str,
    bootstrap: usize,
) -> Result<(), String> {
    at_most(runs_name, runs, MOST_RANDOM_RUNS, runs_why)?;
    at_most("bootstrap", bootstrap, MOST_BOOTSTRAP, BOOTSTRAP_WHY)
}

/// The machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`); `None` where the
/// system does not say, and checks that need it are skipped.
pub fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` as `12.3 GB` (decimal), for messages.
pub fn gigabytes(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_named_with_its_list() {
        assert!(each_once("pools", &["mean", "cls"]).is_ok());
        assert!(each_once::<f64>("alphas", &[]).is_ok());
        let err = each_once("alphas", &[0.5, -0.5, 1.0, -0.5]).unwrap_err();
        assert_eq!(err, "alphas lists `-0.5` twice; list each once");
        // By what items resolve to: the first later item that matches an earlier one.
        let same_parity = |a: &i32, b: &i32| a % 2 == b % 2;
        assert_eq!(first_repeat_by(&[1, 2, 4, 3], same_parity), Some((1, 2)));
        assert_eq!(first_repeat_by(&[1, 2], same_parity), None);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:       24567892 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_567_892 * 1024));
        assert_eq!(parse_mem_total("MemFree: 3 kB"), None);
    }

    #[test]
    fn bounds_name_the_setting() {
        assert!(at_most("bootstrap", MOST_BOOTSTRAP, MOST_BOOTSTRAP, "").is_ok());
        let e = at_most("bootstrap", MOST_BOOTSTRAP + 1, MOST_BOOTSTRAP, "why").unwrap_err();
        assert_eq!(e, "bootstrap = 100001; at most 100000 (why)");
    }
}
