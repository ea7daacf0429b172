"""Real machine code as decoder test input: executable sections of the host's ELF files and of a Debian
kernel image, swept with iced-x86 for instruction boundaries and compared field by field with vmmio's
decoder, capstone and objdump. Used by tests/test_decode_real_code.py and bench/verify_coverage.py.
"""
