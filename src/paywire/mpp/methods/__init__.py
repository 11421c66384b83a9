"""MPP payment methods (seller checks and settlement; buyer signing helpers)."""
