//! Human sizes: parsing `"10G"` in configs, printing `"1.5 MiB"` in tables.
//!
//! Units are binary (1K = 1024), as Docker's and containers/storage's `size=` options read them.
//! Parsing is the drivers' shared plumbing's (drivers parse their own config sizes with it).

pub use strata_driver_util::size::parse_size;

/// Formats bytes for people: `"0 B"`, `"1023 B"`, `"1.5 KiB"`, `"10 GiB"`.
pub fn format_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let names = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < names.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 || value.fract() < 0.05 {
        format!("{value:.0} {}", names[unit])
    } else {
        format!("{value:.1} {}", names[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(10 << 30), "10 GiB");
        assert_eq!(format_size(150 << 20), "150 MiB");
    }
}
