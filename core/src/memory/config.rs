//! The memory governor's configuration, its presets, and the pressure levels it reports.

use core::fmt;

/// How close the whole process is to the memory limit the platform kills it at.
///
/// Ordered: `Normal < Elevated < Critical`. Engines told a level with `on_pressure` shrink their
/// effective limits by one rule, [`Pressure::scale`]: the whole configured limit at `Normal`,
/// half at `Elevated`, a quarter at `Critical`, never below 1 and never above the limit
/// allocated at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Pressure {
    /// Below the elevated threshold: every configured limit applies.
    #[default]
    Normal,
    /// Past the elevated threshold: limits are halved.
    Elevated,
    /// Past the critical threshold: limits are quartered, reservations are refused, and the
    /// proxy refuses new flows and evicts idle ones.
    Critical,
}

impl Pressure {
    /// The effective value of a configured `limit` at this level: `limit`, `limit / 2` or
    /// `limit / 4`, but at least 1 when `limit` is not 0. Monotone, so a low watermark stays at
    /// or below its high watermark.
    pub const fn scale(self, limit: u64) -> u64 {
        let scaled = match self {
            Pressure::Normal => limit,
            Pressure::Elevated => limit / 2,
            Pressure::Critical => limit / 4,
        };
        if scaled == 0 && limit > 0 { 1 } else { scaled }
    }

    /// [`Pressure::scale`] for a `u32` limit.
    pub const fn scale_u32(self, limit: u32) -> u32 {
        // The scaled value is at most `limit`, so it fits.
        self.scale(limit as u64) as u32
    }
}

impl fmt::Display for Pressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pressure::Normal => "normal",
            Pressure::Elevated => "elevated",
            Pressure::Critical => "critical",
        })
    }
}

/// Configuration of a [`MemoryGovernor`](crate::MemoryGovernor): the process's memory limit and
/// the pressure thresholds, as fractions of it in thousandths.
///
/// A level is entered as soon as the process's projected use reaches its threshold, and left
/// only once use has stayed below the threshold minus the hysteresis for `calm_micros` (fast up,
/// slow down: memory surges come in bursts, and limits that spring back at the first quiet sample
/// invite the next surge).
///
/// Start from a preset: [`MemoryConfig::PACKET_TUNNEL`] or [`MemoryConfig::APP_PROXY`]. One
/// absolute set of thresholds cannot fit both limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemoryConfig {
    /// The memory limit the platform kills the process at, in bytes (50 MiB for an iOS packet
    /// tunnel, 15 MiB for an app proxy). Not 0.
    pub limit_bytes: u64,
    /// Use, in thousandths of the limit, at which pressure becomes elevated. Above 0, below
    /// `critical_permille`.
    pub elevated_permille: u16,
    /// Use, in thousandths of the limit, at which pressure becomes critical and reservations are
    /// refused. Above `elevated_permille`, at most 1000.
    pub critical_permille: u16,
    /// How far, in thousandths of the limit, use must fall below a level's threshold before the
    /// level is left. Above 0, below `elevated_permille`.
    pub hysteresis_permille: u16,
    /// How long use must stay below the leaving threshold before a level is left, in
    /// microseconds; 0 leaves at the first report below it.
    pub calm_micros: u64,
    /// How many reservations may be outstanding at once: the slots the governor is built over.
    /// Not 0.
    pub max_reservations: u32,
}

impl MemoryConfig {
    /// An iOS packet tunnel provider, killed at 50 MiB: elevated at 50 % (25 MiB), critical at
    /// 70 % (35 MiB), leaving each 5 MiB lower after 1 s of calm. The 15 MiB left above the
    /// critical threshold cover one surge of the size seen in the field (an extension went from
    /// 40.2 MB to 51.4 MB in 0.33 s) before the next headroom sample; 64 reservations.
    pub const PACKET_TUNNEL: MemoryConfig = MemoryConfig {
        limit_bytes: 50 << 20,
        elevated_permille: 500,
        critical_permille: 700,
        hysteresis_permille: 100,
        calm_micros: 1_000_000,
        max_reservations: 64,
    };

    /// An app proxy provider, killed at 15 MiB: elevated at 60 % (9 MiB), critical at 80 %
    /// (12 MiB), leaving each 1.5 MiB lower after 1 s of calm. A proxy's own buffers are a
    /// larger share of its smaller limit, so it can run closer to it; 64 reservations.
    pub const APP_PROXY: MemoryConfig = MemoryConfig {
        limit_bytes: 15 << 20,
        elevated_permille: 600,
        critical_permille: 800,
        hysteresis_permille: 100,
        calm_micros: 1_000_000,
        max_reservations: 64,
    };

    /// Check the configuration: [`MemoryGovernor::new`](crate::MemoryGovernor::new) refuses
    /// what this refuses.
    pub const fn validate(&self) -> Result<(), MemoryConfigError> {
        if self.limit_bytes == 0 {
            return Err(MemoryConfigError::ZeroLimit);
        }
        if self.max_reservations == 0 || self.max_reservations == u32::MAX {
            return Err(MemoryConfigError::Reservations);
        }
        if self.elevated_permille == 0
            || self.elevated_permille >= self.critical_permille
            || self.critical_permille > 1000
        {
            return Err(MemoryConfigError::Thresholds);
        }
        if self.hysteresis_permille == 0 || self.hysteresis_permille >= self.elevated_permille {
            return Err(MemoryConfigError::Hysteresis);
        }
        Ok(())
    }

    /// The byte thresholds of the configuration.
    pub(crate) const fn thresholds(&self) -> Thresholds {
        let limit = self.limit_bytes;
        Thresholds {
            elevated_enter: permille_of(limit, self.elevated_permille),
            elevated_leave: permille_of(
                limit,
                self.elevated_permille
                    .saturating_sub(self.hysteresis_permille),
            ),
            critical_enter: permille_of(limit, self.critical_permille),
            critical_leave: permille_of(
                limit,
                self.critical_permille
                    .saturating_sub(self.hysteresis_permille),
            ),
        }
    }
}

/// `limit * permille / 1000`, without overflow for a permille of at most 1000.
const fn permille_of(limit: u64, permille: u16) -> u64 {
    let permille = permille as u64;
    limit / 1000 * permille + limit % 1000 * permille / 1000
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig::PACKET_TUNNEL
    }
}

/// The byte values a configuration's thresholds stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thresholds {
    pub(crate) elevated_enter: u64,
    pub(crate) elevated_leave: u64,
    pub(crate) critical_enter: u64,
    pub(crate) critical_leave: u64,
}

impl Thresholds {
    /// The level a process at `level` moves to once `used` bytes have held long enough: up at
    /// once when a threshold is reached, down only below a threshold minus the hysteresis.
    pub(crate) fn target(&self, level: Pressure, used: u64) -> Pressure {
        if used >= self.critical_enter {
            return Pressure::Critical;
        }
        let stays_critical = level == Pressure::Critical && used >= self.critical_leave;
        if stays_critical {
            return Pressure::Critical;
        }
        let elevated = if level == Pressure::Normal {
            used >= self.elevated_enter
        } else {
            used >= self.elevated_leave
        };
        if elevated {
            Pressure::Elevated
        } else {
            Pressure::Normal
        }
    }
}

/// Why a [`MemoryConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MemoryConfigError {
    /// `limit_bytes` is 0.
    ZeroLimit,
    /// `max_reservations` is 0 (or `u32::MAX`, which ids cannot name).
    Reservations,
    /// The thresholds are not `0 < elevated < critical <= 1000`.
    Thresholds,
    /// The hysteresis is 0 or not below the elevated threshold.
    Hysteresis,
    /// The reservation storage does not hold `max_reservations` slots.
    StorageMismatch,
}

impl core::error::Error for MemoryConfigError {}

impl fmt::Display for MemoryConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryConfigError::ZeroLimit => "the memory limit is zero",
            MemoryConfigError::Reservations => "max_reservations is zero or u32::MAX",
            MemoryConfigError::Thresholds => {
                "thresholds must satisfy 0 < elevated < critical <= 1000 permille"
            }
            MemoryConfigError::Hysteresis => {
                "the hysteresis must be above zero and below the elevated threshold"
            }
            MemoryConfigError::StorageMismatch => {
                "the reservation storage does not hold max_reservations slots"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_halves_and_quarters_but_never_reaches_zero() {
        assert_eq!(Pressure::Normal.scale(1000), 1000);
        assert_eq!(Pressure::Elevated.scale(1000), 500);
        assert_eq!(Pressure::Critical.scale(1000), 250);
        assert_eq!(Pressure::Critical.scale(3), 1);
        assert_eq!(Pressure::Critical.scale(0), 0);
        assert_eq!(Pressure::Elevated.scale_u32(u32::MAX), u32::MAX / 2);
    }

    #[test]
    fn presets_are_valid_and_their_thresholds_are_exact() {
        for preset in [MemoryConfig::PACKET_TUNNEL, MemoryConfig::APP_PROXY] {
            assert_eq!(preset.validate(), Ok(()));
        }
        let t = MemoryConfig::PACKET_TUNNEL.thresholds();
        assert_eq!(t.elevated_enter, 25 << 20);
        assert_eq!(t.critical_enter, 35 << 20);
        assert_eq!(t.elevated_leave, 20 << 20);
        assert_eq!(t.critical_leave, 30 << 20);
        let max = MemoryConfig {
            limit_bytes: u64::MAX,
            critical_permille: 1000,
            ..MemoryConfig::PACKET_TUNNEL
        };
        assert_eq!(max.thresholds().critical_enter, u64::MAX);
    }

    #[test]
    fn validate_names_the_first_problem() {
        let base = MemoryConfig::APP_PROXY;
        let cases = [
            (
                MemoryConfig {
                    limit_bytes: 0,
                    ..base
                },
                MemoryConfigError::ZeroLimit,
            ),
            (
                MemoryConfig {
                    max_reservations: 0,
                    ..base
                },
                MemoryConfigError::Reservations,
            ),
            (
                MemoryConfig {
                    elevated_permille: 0,
                    ..base
                },
                MemoryConfigError::Thresholds,
            ),
            (
                MemoryConfig {
                    elevated_permille: 800,
                    ..base
                },
                MemoryConfigError::Thresholds,
            ),
            (
                MemoryConfig {
                    critical_permille: 1001,
                    ..base
                },
                MemoryConfigError::Thresholds,
            ),
            (
                MemoryConfig {
                    hysteresis_permille: 0,
                    ..base
                },
                MemoryConfigError::Hysteresis,
            ),
            (
                MemoryConfig {
                    hysteresis_permille: 600,
                    ..base
                },
                MemoryConfigError::Hysteresis,
            ),
        ];
        for (config, error) in cases {
            assert_eq!(config.validate(), Err(error), "{config:?}");
        }
    }

    #[test]
    fn target_rises_at_once_and_falls_only_below_the_hysteresis() {
        let t = Thresholds {
            elevated_enter: 500,
            elevated_leave: 400,
            critical_enter: 700,
            critical_leave: 600,
        };
        use Pressure::*;
        assert_eq!(t.target(Normal, 499), Normal);
        assert_eq!(t.target(Normal, 500), Elevated);
        assert_eq!(t.target(Normal, 700), Critical);
        assert_eq!(t.target(Elevated, 400), Elevated);
        assert_eq!(t.target(Elevated, 399), Normal);
        assert_eq!(t.target(Critical, 600), Critical);
        assert_eq!(t.target(Critical, 599), Elevated);
        assert_eq!(t.target(Critical, 399), Normal);
    }
}
