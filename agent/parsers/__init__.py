"""Pure parsers: command output or file text in, typed facts out. No I/O here (a test reads
the imports to keep it so)."""
