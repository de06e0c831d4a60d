//! One way to build a configuration, for every engine, from outside the core crate: start from
//! the documented `DEFAULT` and change fields (`Config { field, ..Config::DEFAULT }`), so a
//! field added later keeps its default. The C defaults (`tidegate_*_config_default`, and the
//! flow, budget and race parts of `tidegate_proxy_config_default`) are the same values, and
//! every default builds its engine.

use tidegate::*;
use tidegate_core::{
    BudgetConfig, ConnectionBudget, DEFAULT_RACE_SLOTS, EyeballsConfig, FlowGovernor, FlowPolicy,
    FlowSlot, HappyEyeballs, Instant, Lifecycle, LifecycleConfig, ProxyConfig, ProxyEngine,
    RaceSlot, TaskSlot, TunnelConfig,
};

#[test]
fn every_config_is_built_from_its_default_and_the_default_builds_the_engine() {
    let tunnel = TunnelConfig {
        max_packet_len: 1280,
        ..TunnelConfig::DEFAULT
    };
    assert!(tunnel.validate().is_ok());
    let budget = BudgetConfig {
        max_attempts_in_flight: 8,
        ..BudgetConfig::DEFAULT
    };
    assert!(ConnectionBudget::new(budget).is_ok());
    assert_eq!(BudgetConfig::DEFAULT, BudgetConfig::default());
    let race = EyeballsConfig {
        attempt_timeout_micros: 2_000_000,
        ..EyeballsConfig::DEFAULT
    };
    assert!(HappyEyeballs::<4>::new(race, Instant::from_micros(0)).is_ok());
    assert_eq!(EyeballsConfig::DEFAULT, EyeballsConfig::default());
    let policy = FlowPolicy {
        max_flows: 100,
        ..FlowPolicy::DEFAULT
    };
    let slots = vec![FlowSlot::EMPTY; 128];
    assert!(FlowGovernor::new(Instant::from_micros(0), slots, policy).is_ok());
    assert_eq!(FlowPolicy::DEFAULT, FlowPolicy::default());
    let lifecycle = LifecycleConfig {
        tasks_in_flight_max: 2,
        ..LifecycleConfig::DEFAULT
    };
    assert!(Lifecycle::new(lifecycle, vec![TaskSlot::EMPTY; 4]).is_ok());
    assert_eq!(LifecycleConfig::DEFAULT, LifecycleConfig::default());
    let proxy = ProxyConfig {
        flows: policy,
        ..ProxyConfig::DEFAULT
    };
    let (flows, races) = (vec![FlowSlot::EMPTY; 128], vec![RaceSlot::EMPTY; 8]);
    assert!(ProxyEngine::new(Instant::from_micros(0), flows, races, proxy).is_ok());
    assert_eq!(ProxyConfig::DEFAULT, ProxyConfig::default());
}

#[test]
fn the_c_defaults_are_the_rust_defaults() {
    let proxy = tidegate_proxy_config_default();
    assert_eq!(proxy.race_slots as usize, DEFAULT_RACE_SLOTS);
    let c = proxy.budget;
    let r = BudgetConfig::DEFAULT;
    assert_eq!(
        (c.max_attempts_in_flight, c.max_open_connections, c.fd_limit),
        (r.max_attempts_in_flight, r.max_open_connections, r.fd_limit)
    );
    assert_eq!(
        (
            u64::from(c.fd_reserve),
            c.backoff_floor,
            c.recovery_interval_us
        ),
        (r.fd_reserve, r.backoff_floor, r.recovery_interval_micros)
    );
    let c = proxy.race;
    let r = EyeballsConfig::DEFAULT;
    assert_eq!(
        (
            c.resolution_delay_us,
            c.connection_attempt_delay_us,
            c.attempt_timeout_us,
            c.budget_wait_us
        ),
        (
            r.resolution_delay_micros,
            r.connection_attempt_delay_micros,
            r.attempt_timeout_micros,
            r.budget_wait_micros
        )
    );
    let c = proxy.flows;
    let r = FlowPolicy::DEFAULT;
    assert_eq!(
        (c.max_flows, c.idle_timeout_us, c.connect_timeout_us),
        (r.max_flows, r.idle_timeout_micros, r.connect_timeout_micros)
    );
    let c = tidegate_lifecycle_config_default();
    let r = LifecycleConfig::DEFAULT;
    assert_eq!(
        (c.housekeeping_deadline_us, c.tasks_in_flight_max),
        (
            r.housekeeping_deadline_micros,
            u32::from(r.tasks_in_flight_max)
        )
    );
    let c = tidegate_tunnel_config_default();
    let r = TunnelConfig::DEFAULT;
    assert_eq!(
        (
            c.outbound_bytes,
            c.inbound_bytes,
            c.max_packet_len,
            c.packet_align
        ),
        (
            r.outbound_bytes,
            r.inbound_bytes,
            r.max_packet_len,
            r.packet_align
        )
    );
}
