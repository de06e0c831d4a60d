//! The scenario lab: what tidegate does for a host, shown side by side with a naive host, and a
//! sizing helper.
//!
//! ```text
//! cargo run --release -p tidegate-tests --bin tidegate-lab            # table
//! cargo run --release -p tidegate-tests --bin tidegate-lab -- --json  # for machines
//! cargo run --release -p tidegate-tests --bin tidegate-lab -- size --rate-mbit 100 --rtt-ms 80
//! ```

use std::process::ExitCode;

use tidegate_tests::lab::{self, Scale, sizing};

const USAGE: &str = "\
usage: tidegate-lab [--json]
       tidegate-lab size --rate-mbit <Mbit/s> --rtt-ms <ms> [--mtu <bytes>]
                         [--avg-packet <bytes>] [--read-batch <packets>]

Without arguments: run every scenario (naive host vs tidegate) and print a table.
--json: the same rows as JSON.
size: recommend ring sizes and flow watermarks from the bandwidth-delay product and print the
      exact footprint (defaults: --mtu 1400 --avg-packet 512 --read-batch 64).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("size") => size(&args[1..]),
        Some("--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--json") if args.len() == 1 => {
            println!("{}", lab::json(&lab::run_all(Scale::Full)));
            ExitCode::SUCCESS
        }
        None => {
            table();
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown argument {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn table() {
    let rows = lab::run_all(Scale::Full);
    println!("tidegate lab: deterministic virtual-time scenarios, naive host vs tidegate\n");
    print!("{}", lab::table(&rows));
    println!(
        "\nceiling: the most the tidegate host can hold, fixed when it is built; mem peak: the \
         most it held.\nthruput: share of the bottleneck's capacity delivered while load was \
         offered; drops: packets dropped\nor refused by anyone. admitted: the well-behaved app's \
         requests served. stop: stop request to\ncompletion (the restart waits this long). hung: \
         connections neither up nor failed after {} s.\n'-': does not apply. --json has every \
         figure; `size --help` sizes the rings.",
        lab::HUNG_AFTER_SECONDS
    );
}

fn size(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse_size(args).and_then(|input| sizing::recommend(input).map_err(|e| e.to_string())) {
        Ok(recommendation) => {
            print!("{}", sizing::report(&recommendation));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse_size(args: &[String]) -> Result<sizing::SizingInput, String> {
    let (mut rate, mut rtt, mut average_packet) = (None, None, None);
    let mut input = sizing::SizingInput::new(0.0, 0.0);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<f64, String> {
            value
                .parse::<f64>()
                .map_err(|_| format!("{what} must be a number, not {value:?}"))
        };
        let integer = |what: &str| -> Result<u32, String> {
            value
                .parse::<u32>()
                .map_err(|_| format!("{what} must be a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--rate-mbit" => rate = Some(number("--rate-mbit")?),
            "--rtt-ms" => rtt = Some(number("--rtt-ms")?),
            "--mtu" => input.mtu = integer("--mtu")?,
            "--avg-packet" => average_packet = Some(integer("--avg-packet")?),
            "--read-batch" => input.read_batch = integer("--read-batch")?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    input.rate_mbit = rate.ok_or("--rate-mbit is required")?;
    input.rtt_ms = rtt.ok_or("--rtt-ms is required")?;
    // The default average packet never exceeds a small MTU.
    input.average_packet = average_packet.unwrap_or(input.average_packet.min(input.mtu));
    Ok(input)
}
