#!/usr/bin/env bash
# The C ABI on a microcontroller. From the repository root:
#
#   tests/embedded/run.sh
#
# 1. Builds the bare-metal static library (thumbv7em-none-eabihf, no std, no allocator):
#      cargo build --release -p tidegate-ffi --target thumbv7em-none-eabihf --no-default-features
# 2. Compiles main.c and startup.c with arm-none-eabi-gcc for an MPS2 AN386 board (Cortex-M4F,
#    hard float), links them against the library with newlib and semihosting (librdimon), and
#    runs the program on qemu-system-arm; its exit status is the test's.
# 3. Proves no panic is reachable: builds the library again with `no-panic-proof`, whose panic
#    handler calls a symbol nothing defines, and links a program that keeps every exported
#    function. The link fails if any panic path survived optimisation.
# 4. Prints the program's code size and RAM (static .data + .bss, peak stack, engine arenas).
#
# Needs the Debian packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm, and
# the rustup target thumbv7em-none-eabihf. Builds go to target/embedded.
set -euo pipefail
cd "$(dirname "$0")/../.."

target=thumbv7em-none-eabihf
out=target/embedded
lib="$out/$target/release/libtidegate.a"
cflags=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -Os -g -std=c99 -Wall -Wextra
    -Werror -ffunction-sections -fdata-sections -Iinclude)
ldflags=(-nostartfiles --specs=rdimon.specs -Wl,--gc-sections -Wl,--no-warn-execstack
    -T tests/embedded/mps2-an386.ld)

cargo="${CARGO:-cargo}"
"$cargo" build --quiet --release -p tidegate-ffi --target "$target" --no-default-features \
    --target-dir "$out"
arm-none-eabi-gcc "${cflags[@]}" "${ldflags[@]}" -Wl,-Map,"$out/tidegate-m4.map" \
    tests/embedded/startup.c tests/embedded/main.c "$lib" -o "$out/tidegate-m4.elf"

echo "== run on qemu-system-arm -M mps2-an386"
timeout 60 qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel "$out/tidegate-m4.elf"

echo "== a panic reaches the hook"
"$cargo" build --quiet --release -p tidegate-ffi --target "$target" --no-default-features \
    --features testing-panic --target-dir "$out/panic"
arm-none-eabi-gcc "${cflags[@]}" "${ldflags[@]}" -DTIDEGATE_TEST_PANIC tests/embedded/startup.c \
    tests/embedded/main.c "$out/panic/$target/release/libtidegate.a" -o "$out/panic.elf"
if panicked=$(timeout 60 qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
        -semihosting-config enable=on,target=native -kernel "$out/panic.elf"); then
    echo "$panicked"
    echo "the program that panics exited 0" >&2
    exit 1
fi
echo "$panicked"
grep -q "the hook ran" <<< "$panicked"

echo "== no reachable panic"
"$cargo" build --quiet --release -p tidegate-ffi --target "$target" --no-default-features \
    --features no-panic-proof --target-dir "$out/proof"
proof_lib="$out/proof/$target/release/libtidegate.a"
mapfile -t exported < <(arm-none-eabi-nm -g --defined-only "$proof_lib" 2>/dev/null |
    awk '$2 == "T" && $3 ~ /^tidegate_/ { print $3 }' | sort -u)
if [ "${#exported[@]}" -lt 60 ]; then
    echo "only ${#exported[@]} exported functions found in $proof_lib" >&2
    exit 1
fi
keep=()
for symbol in "${exported[@]}"; do keep+=("-Wl,--undefined=$symbol"); done
printf 'void reset_handler(void) { for (;;) {} }\n' > "$out/proof-entry.c"
if ! arm-none-eabi-gcc "${cflags[@]}" -nostdlib -Wl,--gc-sections -Wl,-e,reset_handler \
        "${keep[@]}" "$out/proof-entry.c" "$proof_lib" -o "$out/proof.elf" 2> "$out/proof.log"; then
    grep -v 'GNU-stack\|deprecated' "$out/proof.log" >&2
    echo "a panic path is reachable from the functions above" >&2
    exit 1
fi
echo "no panic path is reachable from any of the ${#exported[@]} exported functions"

echo "== size (bytes)"
arm-none-eabi-size -A "$out/tidegate-m4.elf" | awk '$1 == ".text" || $1 == ".data" || $1 == ".bss" {
    printf "program %-6s %7d\n", $1, $2 }'
# The library's share: the input sections the link kept from libtidegate.a, from the map file's
# memory map (its first part lists the discarded ones; a long section name sits on a line of its
# own, with address, size and file on the next).
awk '
    function hex(s,    n, i, c) {
        n = 0; s = tolower(substr(s, 3))
        for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)) - 1; n = n * 16 + c }
        return n
    }
    /^Linker script and memory map/ { kept = 1 }
    !kept { next }
    /^ \.|^\./ { section = "" }
    /^ \.text/ { section = "text" } /^ \.rodata/ { section = "text" }
    /^ \.data/ { section = "data" } /^ \.bss/ { section = "bss" }
    /libtidegate\.a\(/ && $(NF - 1) ~ /^0x/ { size[section] += hex($(NF - 1)) }
    END { printf "library .text+.rodata %7d\nlibrary .data %7d\nlibrary .bss %7d\n",
        size["text"], size["data"], size["bss"] }
' "$out/tidegate-m4.map"
arm-none-eabi-size "$out/proof.elf" | awk 'NR == 2 { printf "library, every function kept: .text %d\n", $1 }'
