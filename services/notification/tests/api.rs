//! The notification service through its public API, against loopback fakes of the push
//! providers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api {
    pub mod end_to_end;
    pub mod fakes;
    pub mod providers;
    pub mod restart;
    pub mod tokens;
    pub mod wakes;
}
