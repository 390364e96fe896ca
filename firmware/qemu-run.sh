#!/usr/bin/env bash
# Boots a driftlog firmware image in QEMU: the cargo runner (`cargo run --release`), also used
# by the end-to-end tests.
#
#   qemu-run.sh MACHINE ELF [extra QEMU arguments]
#
# Environment:
#   DRIFTLOG_SERIAL  where UART0 goes (default tcp:127.0.0.1:7401):
#                    tcp:HOST:PORT  QEMU connects to a listening `driftlog-agent bridge
#                                   --serial tcp:HOST:PORT` and reconnects every 100 ms while
#                                   it is absent (bytes sent meanwhile are lost, as on a
#                                   UART with nothing attached)
#                    unix:PATH      the same over a Unix socket (`--serial unix:PATH`)
#                    anything else  passed to `-serial` as it is (none, file:uart.bin, stdio ...)
#   DRIFTLOG_EPOCH   the boot epoch; default: one more than the last one this script used,
#                    and at least the Unix time in seconds, kept in $DRIFTLOG_EPOCH_FILE
#                    (default target/boot-epoch), so an epoch is never used twice
#   DRIFTLOG_APPEND  more boot arguments: events=N interval_ms=N drain_s=N key=ID:HEX
#                    (see src/args.rs)
#   DRIFTLOG_ICOUNT  QEMU's -icount (default shift=auto,sleep=off: idle device time is
#                    skipped, so the device clock runs tens of times faster than the host's;
#                    `off`: no -icount, the device clock is the host's. shift=auto,sleep=on
#                    is only near the host's: 10-16 % fast on some machines)
#
# Semihosting output (the firmware's reports) goes to stdout; the exit code is the firmware's
# (0 done, 2 bad arguments, 3 not everything acknowledged in time, 101 panic).
set -euo pipefail
machine=${1:?usage: qemu-run.sh MACHINE ELF [QEMU arguments]}
elf=${2:?usage: qemu-run.sh MACHINE ELF [QEMU arguments]}
shift 2

serial=${DRIFTLOG_SERIAL:-tcp:127.0.0.1:7401}
case "$serial" in
    tcp:*)
        hostport=${serial#tcp:}
        uart=(-chardev "socket,id=uart0,host=${hostport%:*},port=${hostport##*:},reconnect-ms=100" -serial chardev:uart0)
        ;;
    unix:*)
        uart=(-chardev "socket,id=uart0,path=${serial#unix:},reconnect-ms=100" -serial chardev:uart0)
        ;;
    *)
        uart=(-serial "$serial")
        ;;
esac

epoch=${DRIFTLOG_EPOCH:-}
if [ -z "$epoch" ]; then
    state=${DRIFTLOG_EPOCH_FILE:-$(dirname "$0")/target/boot-epoch}
    mkdir -p "$(dirname "$state")"
    exec 9>>"$state.lock"
    flock 9
    last=$(cat "$state" 2>/dev/null || echo 0)
    now=$(date +%s)
    epoch=$(( last + 1 > now ? last + 1 : now ))
    echo "$epoch" > "$state.tmp" && mv "$state.tmp" "$state"
    exec 9>&-
fi

icount=${DRIFTLOG_ICOUNT:-shift=auto,sleep=off}
if [ "$icount" = off ]; then icount_args=(); else icount_args=(-icount "$icount"); fi
exec qemu-system-arm -machine "$machine" -display none -monitor none \
    -semihosting-config enable=on,target=native \
    "${icount_args[@]}" \
    "${uart[@]}" \
    -kernel "$elf" -append "epoch=$epoch ${DRIFTLOG_APPEND:-}" "$@"
