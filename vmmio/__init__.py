"""vmmio: x86 MMIO and port-I/O instruction emulation for VMMs."""
