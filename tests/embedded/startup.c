/* Start-up for the MPS2 AN386 board (Cortex-M4F) under QEMU: the vector table, and a reset
 * handler that enables the FPU (the library is built for hard float, so its first floating-point
 * instruction would fault otherwise), copies .data, zeroes .bss, paints the stack to measure its
 * peak, and runs main. Output and exit go through newlib's semihosting (librdimon). */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start__[], __bss_end__[];
extern uint32_t __stack_limit[], __stack_top[];

extern int main(void);
extern void initialise_monitor_handles(void);

/* The word the stack is painted with: words still holding it were never written. */
#define STACK_PAINT 0x5AFEC0DEu

void reset_handler(void);

static void fault_handler(void) {
    /* A fault ends the run with a failure status. */
    exit(3);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, /* initial stack pointer */
    reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
};

/* Bytes of stack ever used, from the painted words the program overwrote. */
uint32_t stack_peak_bytes(void) {
    const uint32_t *word = __stack_limit;
    while (word < __stack_top && *word == STACK_PAINT) {
        word++;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)word);
}

__attribute__((noreturn, naked)) void reset_handler(void) {
    __asm__ volatile(
        /* CPACR: full access to coprocessors 10 and 11, the FPU. */
        "ldr r0, =0xE000ED88\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
        "b reset_continue\n");
}

__attribute__((noreturn, used)) void reset_continue(void) {
    uint32_t *src = __data_load;
    for (uint32_t *dst = __data_start; dst < __data_end;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = __bss_start__; dst < __bss_end__;) {
        *dst++ = 0;
    }
    /* Paint the stack below what this function uses (256 bytes of margin). */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *word = __stack_limit; word < sp - 64; word++) {
        *word = STACK_PAINT;
    }
    initialise_monitor_handles();
    exit(main());
}
