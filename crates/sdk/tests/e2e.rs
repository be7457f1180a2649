//! End-to-end tests: several SDK clients against the real server (testkit).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e {
    pub mod devices;
    pub mod groups;
    pub mod media;
    pub mod mitm;
    pub mod one_to_one;
    pub mod support;
    pub mod trust;
}
