//! The strata conformance suite (in progress).
