//! Code the benches share.

pub(crate) mod frames;
