//! Logging shim: one macro per level, routed to `defmt` or `log` when that feature is on.
//!
//! With neither feature the arguments are still type-checked (inside a closure that is never
//! called), so a log line cannot rot while logging is off.

#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` are mutually exclusive: enable at most one");

macro_rules! tg_log {
    ($level:ident, $($arg:expr),+ $(,)?) => {{
        #[cfg(feature = "defmt")]
        ::defmt::$level!($($arg),+);
        #[cfg(feature = "log")]
        ::log::$level!($($arg),+);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        {
            let _ = || {
                let _ = ($(&$arg),+);
            };
        }
    }};
}

/// Log a state change worth seeing in a field trace (pauses, resumes, drops).
macro_rules! log_debug {
    ($($arg:expr),+ $(,)?) => { $crate::fmt::tg_log!(debug, $($arg),+) };
}

/// Log a fine-grained event.
macro_rules! log_trace {
    ($($arg:expr),+ $(,)?) => { $crate::fmt::tg_log!(trace, $($arg),+) };
}

/// Log a condition the host should fix (bad input, a limit reached).
macro_rules! log_warn {
    ($($arg:expr),+ $(,)?) => { $crate::fmt::tg_log!(warn, $($arg),+) };
}

#[allow(unused_imports)]
pub(crate) use {log_debug, log_trace, log_warn, tg_log};
