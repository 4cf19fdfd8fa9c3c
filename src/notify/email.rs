//! Email target (being written).
