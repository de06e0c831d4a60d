//! A panic inside a C call is caught at the boundary: the call returns `TIDEGATE_STATUS_PANIC`,
//! the handle is poisoned so every later call returns `TIDEGATE_STATUS_POISONED`, and
//! `tidegate_tunnel_free` still releases it.

use std::ptr;

use tidegate::*;

#[test]
fn a_panic_returns_the_panic_status_and_poisons_the_handle() {
    let config = tidegate_tunnel_config_default();
    let mut tunnel = ptr::null_mut();
    // SAFETY: valid pointers; the handle is freed at the end and not used after.
    unsafe {
        assert_eq!(
            tidegate_tunnel_new(&config, &mut tunnel),
            TidegateStatus::Ok
        );
        assert_eq!(
            tidegate_tunnel_on_outbound_packet(tunnel, 0, [1u8].as_ptr(), 1),
            TidegateStatus::Ok
        );

        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {})); // keep the expected panic out of the output
        let status = testing_panic_inside(tunnel);
        std::panic::set_hook(previous_hook);
        assert_eq!(status, TidegateStatus::Panic);

        let mut can_read = true;
        assert_eq!(
            tidegate_tunnel_can_read_outbound(tunnel, &mut can_read),
            TidegateStatus::Poisoned
        );
        assert!(can_read, "out-param untouched on failure");
        assert_eq!(
            tidegate_tunnel_on_outbound_packet(tunnel, 0, [1u8].as_ptr(), 1),
            TidegateStatus::Poisoned
        );
        let mut stats = std::mem::MaybeUninit::uninit();
        assert_eq!(
            tidegate_tunnel_stats(tunnel, stats.as_mut_ptr()),
            TidegateStatus::Poisoned
        );
        assert_eq!(testing_panic_inside(tunnel), TidegateStatus::Poisoned);
        tidegate_tunnel_free(tunnel);
    }
}

#[test]
fn a_panic_inside_the_budget_during_a_race_call_poisons_both_handles() {
    let budget_config = tidegate_budget_config_default();
    let race_config = tidegate_eyeballs_config_default();
    let mut budget = ptr::null_mut();
    let mut race = ptr::null_mut();
    // SAFETY: valid pointers; both handles are freed at the end and not used after.
    unsafe {
        assert_eq!(
            tidegate_budget_new(&budget_config, &mut budget),
            TidegateStatus::Ok
        );
        assert_eq!(
            tidegate_eyeballs_new(&race_config, 0, &mut race),
            TidegateStatus::Ok
        );

        let previous_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let status = testing_panic_inside_budget(race, budget);
        std::panic::set_hook(previous_hook);
        assert_eq!(status, TidegateStatus::Panic);

        let mut action = std::mem::MaybeUninit::uninit();
        assert_eq!(
            tidegate_eyeballs_poll_action(race, budget, action.as_mut_ptr()),
            TidegateStatus::Poisoned
        );
        assert_eq!(
            tidegate_eyeballs_on_abort(race, 1),
            TidegateStatus::Poisoned,
            "the race is poisoned"
        );
        assert_eq!(
            tidegate_budget_try_start_attempt(budget, 1),
            TidegateStatus::Poisoned,
            "the budget is poisoned"
        );
        tidegate_eyeballs_free(race);
        tidegate_budget_free(budget);
    }
}
