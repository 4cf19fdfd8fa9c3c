//! Generic HTTP target (being written).
