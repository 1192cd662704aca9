//! Examples of using strata as a library (in progress).
