//! What a failed socket or connect call means for the host's next move.
//!
//! The OS reports failures as errno values whose numbers differ between Darwin and Linux
//! (`ECONNREFUSED` is 61 on Darwin, 111 on Linux). [`ErrorClass`] folds them into the few
//! classes a host can act on; [`classify_errno`] uses the table of the platform tidegate was built
//! for, and [`classify_errno_for`] takes the platform explicitly (a Linux test replaying a
//! Darwin trace, for example).

use core::fmt;

/// The class of a connection or socket failure, chosen by what the host should do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum ErrorClass {
    /// The process or system ran out of a resource: file descriptors (`EMFILE`, `ENFILE`),
    /// NECP flows (`ENOSPC`), memory (`ENOMEM`, `ENOBUFS`), local ports (`EADDRNOTAVAIL`),
    /// or a temporary shortage (`EAGAIN`). Back off and open fewer connections; retrying at once
    /// makes it worse.
    ResourceExhausted = 0,
    /// The peer actively refused the connection (`ECONNREFUSED`). Try another address; do not
    /// retry the same one at once.
    Refused = 1,
    /// No route to the peer (`ENETUNREACH`, `EHOSTUNREACH`, `ENETDOWN`, `EHOSTDOWN`). Try
    /// another address family or path.
    Unreachable = 2,
    /// The attempt timed out (`ETIMEDOUT`). Try another address; the path may be a black hole.
    TimedOut = 3,
    /// An established connection was reset or aborted (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset = 4,
    /// Local policy forbids the connection (`EACCES`, `EPERM`): a firewall or content filter.
    /// Retrying will not help.
    Denied = 5,
    /// Anything else. Treat it as a failure of this attempt only.
    Other = 6,
}

impl ErrorClass {
    /// Every class, in numeric order.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::ResourceExhausted,
        ErrorClass::Refused,
        ErrorClass::Unreachable,
        ErrorClass::TimedOut,
        ErrorClass::Reset,
        ErrorClass::Denied,
        ErrorClass::Other,
    ];

    /// The class with numeric value `value`, or `None` for an unknown value.
    pub const fn from_u8(value: u8) -> Option<ErrorClass> {
        match value {
            0 => Some(ErrorClass::ResourceExhausted),
            1 => Some(ErrorClass::Refused),
            2 => Some(ErrorClass::Unreachable),
            3 => Some(ErrorClass::TimedOut),
            4 => Some(ErrorClass::Reset),
            5 => Some(ErrorClass::Denied),
            6 => Some(ErrorClass::Other),
            _ => None,
        }
    }

    /// Whether this failure says the host itself is short of resources, so it should lower the
    /// number of connections it opens rather than just try the next address.
    pub const fn is_resource_exhausted(self) -> bool {
        matches!(self, ErrorClass::ResourceExhausted)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::ResourceExhausted => "resource exhausted (descriptors, flows or memory)",
            ErrorClass::Refused => "connection refused by the peer",
            ErrorClass::Unreachable => "network or host unreachable",
            ErrorClass::TimedOut => "connection attempt timed out",
            ErrorClass::Reset => "connection reset or aborted",
            ErrorClass::Denied => "connection denied by local policy",
            ErrorClass::Other => "other failure",
        })
    }
}

/// A platform whose errno numbering [`classify_errno_for`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrnoPlatform {
    /// macOS, iOS and the other Darwin systems (also the BSD numbering).
    Darwin,
    /// Linux (glibc and musl share the kernel's numbers), also Android.
    Linux,
}

impl ErrnoPlatform {
    /// The platform tidegate was compiled for: Darwin on Apple targets, Linux otherwise.
    pub const fn native() -> ErrnoPlatform {
        if cfg!(target_vendor = "apple") {
            ErrnoPlatform::Darwin
        } else {
            ErrnoPlatform::Linux
        }
    }
}

/// Classify `errno` using the numbering of the platform tidegate was built for.
pub const fn classify_errno(errno: i32) -> ErrorClass {
    classify_errno_for(ErrnoPlatform::native(), errno)
}

/// Classify `errno` using `platform`'s numbering. Unknown or zero values are
/// [`ErrorClass::Other`].
pub const fn classify_errno_for(platform: ErrnoPlatform, errno: i32) -> ErrorClass {
    // Numbers shared by Darwin and Linux (the original Unix set).
    match errno {
        1 | 13 => return ErrorClass::Denied, // EPERM, EACCES
        12 | 23 | 24 | 28 => return ErrorClass::ResourceExhausted, // ENOMEM, ENFILE, EMFILE, ENOSPC
        11 if matches!(platform, ErrnoPlatform::Linux) => return ErrorClass::ResourceExhausted,
        32 => return ErrorClass::Reset, // EPIPE
        _ => {}
    }
    match platform {
        ErrnoPlatform::Darwin => match errno {
            35 | 49 | 55 => ErrorClass::ResourceExhausted, // EAGAIN, EADDRNOTAVAIL, ENOBUFS
            61 => ErrorClass::Refused,                     // ECONNREFUSED
            50 | 51 | 64 | 65 => ErrorClass::Unreachable, // ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH
            60 => ErrorClass::TimedOut,                   // ETIMEDOUT
            53 | 54 => ErrorClass::Reset,                 // ECONNABORTED, ECONNRESET
            _ => ErrorClass::Other,
        },
        ErrnoPlatform::Linux => match errno {
            99 | 105 => ErrorClass::ResourceExhausted, // EADDRNOTAVAIL, ENOBUFS
            111 => ErrorClass::Refused,                // ECONNREFUSED
            100 | 101 | 112 | 113 => ErrorClass::Unreachable, // ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH
            110 => ErrorClass::TimedOut,                      // ETIMEDOUT
            103 | 104 => ErrorClass::Reset,                   // ECONNABORTED, ECONNRESET
            _ => ErrorClass::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_numbers_match_the_host_libc() {
        // On the Linux machines that run these tests the host's own constants are the truth.
        if ErrnoPlatform::native() != ErrnoPlatform::Linux {
            return;
        }
        let expect = [
            (24, ErrorClass::ResourceExhausted),  // EMFILE
            (23, ErrorClass::ResourceExhausted),  // ENFILE
            (28, ErrorClass::ResourceExhausted),  // ENOSPC
            (12, ErrorClass::ResourceExhausted),  // ENOMEM
            (105, ErrorClass::ResourceExhausted), // ENOBUFS
            (111, ErrorClass::Refused),
            (110, ErrorClass::TimedOut),
            (101, ErrorClass::Unreachable),
            (113, ErrorClass::Unreachable),
            (104, ErrorClass::Reset),
            (13, ErrorClass::Denied),
            (0, ErrorClass::Other),
            (-1, ErrorClass::Other),
        ];
        for (errno, class) in expect {
            assert_eq!(classify_errno(errno), class, "errno {errno}");
        }
        let io = std::io::Error::from_raw_os_error(111);
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn darwin_numbers_differ_from_linux() {
        use ErrnoPlatform::{Darwin, Linux};
        assert_eq!(classify_errno_for(Darwin, 61), ErrorClass::Refused);
        assert_eq!(classify_errno_for(Linux, 61), ErrorClass::Other);
        assert_eq!(
            classify_errno_for(Darwin, 55),
            ErrorClass::ResourceExhausted
        );
        assert_eq!(classify_errno_for(Darwin, 60), ErrorClass::TimedOut);
        assert_eq!(classify_errno_for(Darwin, 65), ErrorClass::Unreachable);
        assert_eq!(
            classify_errno_for(Darwin, 35),
            ErrorClass::ResourceExhausted
        );
        assert_eq!(classify_errno_for(Darwin, 11), ErrorClass::Other); // EDEADLK on Darwin
        assert_eq!(classify_errno_for(Linux, 11), ErrorClass::ResourceExhausted); // EAGAIN
    }

    #[test]
    fn class_round_trips_through_u8() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::from_u8(class as u8), Some(class));
        }
        assert_eq!(ErrorClass::from_u8(7), None);
    }
}
