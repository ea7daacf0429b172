"""ISA knowledge: decoding tables, operand forms, flag arithmetic. No VM concepts."""
