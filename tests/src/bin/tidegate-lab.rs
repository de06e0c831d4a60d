//! The scenario lab: what tidegate does for a host, shown side by side with a naive host.
//!
//! ```text
//! cargo run --release -p tidegate-tests --bin tidegate-lab            # table
//! cargo run --release -p tidegate-tests --bin tidegate-lab -- --json  # for machines
//! ```

use tidegate_tests::lab;

fn main() {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let rows = lab::run_all();
    if json {
        println!("{}", lab::json(&rows));
    } else {
        println!("tidegate lab: deterministic virtual-time scenarios, naive host vs tidegate\n");
        print!("{}", lab::table(&rows));
        println!(
            "\nmemory peak: most bytes the host buffered; ceiling: tidegate's fixed footprint;\n\
             throughput: share of the bottleneck's capacity used while load was offered;\n\
             drops: packets dropped by the kernel queue or refused by the host, all counted."
        );
    }
}
