//! The strata engine (in progress).
