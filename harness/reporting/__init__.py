"""Everything a person reads: console tables, report.md, figures, sweep and parity reports."""
