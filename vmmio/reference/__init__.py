"""References that speak vmmio's boundary with another emulator inside (Linux KVM's)."""
