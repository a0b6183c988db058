"""gatebench reports: load results files, compare gates, render tables and figures."""
