//! The unfused composition (test reference). Not written yet.
