#!/bin/busybox sh
# /init of vmmio's Linux guest: bring up a shell, show what the devices did, exercise them, reboot.
# Every line starting with "vmmio-linux:" is checked by tests/test_linux.py.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "vmmio-linux: shell up after $(cut -d' ' -f1 /proc/uptime) s"
echo "vmmio-linux: uname $(uname -srm)"
cat /proc/interrupts
# The RTC (CMOS at ports 0x70/0x71, in the kernel) through its driver.
echo "vmmio-linux: rtc $(cat /sys/class/rtc/rtc0/date 2>/dev/null) $(cat /sys/class/rtc/rtc0/time 2>/dev/null)"
# The timers tick while the shell sleeps (HLT waits for the next interrupt): the local APIC's timer
# (LOC) once Linux has calibrated it, the PIT (IRQ 0) before that or without the APIC.
ticks() { awk '/^ *(0|LOC):/ { n += $2 } END { print n + 0 }' /proc/interrupts; }
before=$(ticks)
sleep 1
after=$(ticks)
echo "vmmio-linux: timer interrupts during sleep 1: $((after - before))"
# The 16550's interrupt line: the console's transmit interrupts, counted by the kernel.
echo "vmmio-linux: serial interrupts $(grep ttyS0 /proc/interrupts | tr -s ' ' | cut -d' ' -f3)"
echo "vmmio-linux: memory $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) kB"
echo "vmmio-linux: rebooting"
reboot -f
